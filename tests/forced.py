"""The reason tests give when they force `champion` or `challenger` onto a fixture model
that no evaluation blessed (only a blessed version may hold them unless forced; the rule
itself is tested in tests/registry/test_blessing.py)."""

UNBLESSED = "test: a fixture model, never evaluated"
