"""Continued pre-training on plain text."""
