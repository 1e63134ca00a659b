"""Seed sources: where the inputs of a run come from."""
