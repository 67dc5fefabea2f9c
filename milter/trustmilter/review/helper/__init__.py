"""The privileged helper: Postfix's hold queue for the review page, as root.

protocol.py is the wire format, server.py the root process (`trustmilter
review helper`, command.py), client.py the page's side (`HelperQueue`, a
`HoldQueue` like quarantine/postfix.py's `PostfixQueue`).
"""
