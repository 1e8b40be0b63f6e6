"""Shared leaf: argument checks, error wording, module helpers; imports nothing of the package."""
