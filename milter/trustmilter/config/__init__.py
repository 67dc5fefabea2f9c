"""The configuration: policy.yaml as typed values, its validating loader and its dump.

settings.py (Settings: the whole file), checks.py (the `checks` section),
daemon.py (`milter`, `logging`, `metrics`), dns.py (`dns`), state.py
(`state`), errors.py (InvalidField), load.py (load_settings,
parse_settings, ConfigError: a generic typed YAML binder with FILE:LINE
errors), dump.py (settings_to_yaml). The policy proper (scores, rules,
thresholds, actions, headers) is policy/. Nothing is re-exported here,
so that check modules can import config.errors without the whole tree.
"""
