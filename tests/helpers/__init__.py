"""Helpers shared by the test files (importable as ``helpers.<module>`` because tests/ is on sys.path)."""
