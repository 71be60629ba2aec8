"""Helpers shared by every part: constants, environment variables, logging, errors. Imports no other part."""
