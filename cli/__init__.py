"""The `lumiere` command, on top of everything: it imports the API, the worker and `shared/`,
and nothing imports it back (tests/unit/test_layers.py keeps it so)."""
