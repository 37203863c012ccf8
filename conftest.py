"""Session fixtures shared by tests/ and e2e/: the local control plane and services."""

pytest_plugins = ["e2e.fixtures"]
