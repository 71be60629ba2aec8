"""One logger tree ("llamafactory.*") whose level follows LLAMAFACTORY_VERBOSITY."""

import logging
import sys

from . import envs

_ROOT = "llamafactory"
_configured = False


def _configure() -> None:
    global _configured
    if _configured:
        return
    root = logging.getLogger(_ROOT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s|%(name)s:%(lineno)d] %(asctime)s >> %(message)s",
                                           datefmt="%H:%M:%S"))
    root.addHandler(handler)
    level = getattr(logging, envs.verbosity(), logging.INFO)
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    root.propagate = False
    # bitsandbytes on CPU tries to download faster kernels from the hub and warns when it cannot; its own
    # fallback works, and offline machines would see the warning on every run.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: "kernels-community" not in record.getMessage())
    _configured = True


def get_logger(name: str) -> logging.Logger:
    _configure()
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)
