"""The policy: what decides a verdict, and the pure functions that apply it.

model.py (Policy: scores, rules, thresholds, actions, headers), rules.py
(Rule, ReplyConfig), defaults.py (the built-in scores and rules),
patterns.py (how a signal pattern matches), evaluate.py (evaluate),
finality.py (is_final). It imports no check and nothing of the daemon:
what a check wants from the policy arrives as data on its results.
"""
