"""`lmf webui`: a Gradio page that assembles configs and runs `lmf train` / `lmf export` on them.

Importing this package is cheap; gradio is imported only when the page is built (interface.py). See docs/webui.md.
"""


def run_webui(argv: list[str]) -> None:
    from .interface import run_webui as run

    run(argv)


__all__ = ["run_webui"]
