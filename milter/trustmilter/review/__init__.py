"""The help desk's review page for held mail, and what it needs around it.

The page (served as an unprivileged user) lists Postfix's hold queue, shows
why each message was held, and releases, deletes or marks as spam. Postfix's
queue commands need root, so the page never runs them: it asks the privileged
helper (helper/), a small root process that accepts four commands on
validated queue IDs over a unix socket, from one user only. Releasing and
marking as spam teach the state store, as `trustmilter quarantine` does.
"""
