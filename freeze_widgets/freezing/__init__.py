"""Freezing: targets (paths, globs), BatchNorm policies, preserved modes, rollback, FreezeSpec."""
