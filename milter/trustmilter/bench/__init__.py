"""``trustmilter bench``: a milter-protocol load generator for the daemon.

The benchmark plays the MTA's part of the milter protocol (client.py) with
a generated corpus of realistic messages (corpus.py) against a running
``trustmilter run`` and, in the same run, against a null pymilter that
accepts everything (nullmilter.py), so the cost of trustmilter's checks can
be told apart from the cost of pymilter/libmilter themselves. run.py starts
the DNS server, both milters and the load, and prints the table.

It is a measuring tool, not a test: nothing here asserts a speed.
Everything it starts listens on 127.0.0.1 (or a unix socket) and is
stopped when it ends.
"""
