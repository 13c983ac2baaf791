"""Helpers shared by the test files, one job per module; a test file imports from here, never
from another test file. Importable as `support` because pytest puts tests/ on sys.path."""
