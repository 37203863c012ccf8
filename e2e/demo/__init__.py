"""`make demo` (`python -m e2e.demo up|down`): see `__main__`."""
