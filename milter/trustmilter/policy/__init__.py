"""policy.yaml: the model, its validating loader, and the pure evaluator."""
