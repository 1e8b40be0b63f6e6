"""Checks that find problems before or after a run: optimizer audit, preflight, batch checks."""
