"""Helpers referenced by lmf_demo.yaml."""


def text(value: str) -> str:
    """Keep a CSV cell as text (an option column holding only numbers would otherwise become integers)."""
    return value
