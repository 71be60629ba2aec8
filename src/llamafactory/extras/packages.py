"""Which dependency versions a run accepts, checked once before training (DISABLE_VERSION_CHECK skips it)."""

from importlib import metadata

from . import envs
from .errors import UserError

# Lowest versions whose APIs we use; the CPU set we verified together is pinned in requirements/cpu.txt.
MINIMUM = {
    "transformers": "5.0.0",
    "datasets": "3.0.0",
    "accelerate": "1.0.0",
    "peft": "0.17.0",
    "trl": "0.20.0",
}


def _as_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_dependencies() -> None:
    if envs.disable_version_check():
        return
    for name, lowest in MINIMUM.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError as err:
            raise UserError(f"{name} is not installed; install it with `pip install '{name}>={lowest}'`.") from err
        if _as_tuple(found) < _as_tuple(lowest):
            raise UserError(
                f"{name} {found} is older than the {lowest} llamafactory needs: "
                f"`pip install -U '{name}>={lowest}'` (or set DISABLE_VERSION_CHECK=1 to try anyway)."
            )
