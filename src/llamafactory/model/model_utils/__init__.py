"""Focused helpers used by the model loader."""
