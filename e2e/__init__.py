"""End-to-end tooling: local control plane, provider simulator, real-client checks."""
