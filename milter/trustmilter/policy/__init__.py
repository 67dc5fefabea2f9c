"""policy.yaml: the model, its validating loader, and the pure evaluator.

model.py (Policy and its sections), rules.py (Rule, ReplyConfig),
defaults.py (the built-in scores and rules), errors.py (InvalidField),
load.py (load_policy, parse_policy, PolicyError), evaluate.py (evaluate),
dump.py (policy_to_yaml). Nothing is re-exported here, so that check
modules can import policy.errors without pulling in the whole model.
"""
