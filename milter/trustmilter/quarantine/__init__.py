"""Reviewing the mail trustmilter quarantined: Postfix's hold queue.

`postfix.py` is the only module that runs Postfix's queue tools
(``postqueue -j``, ``postcat -ehq``, ``postsuper -H``/``-d``); `review.py`
turns their answers into held messages with the reasons trustmilter
recorded, and releases and deletions as spam that teach the state store
(docs/rules.md §7; a spam mark is the other direction).
"""
