"""The checks: one module each, one interface (see base.py); REGISTRY lists them."""
