"""`arg()`: a dataclass field that also carries its help text, allowed choices and whether it is built.

A key that is declared but `planned` parses (so LlamaFactory configs load) and is refused with a clear
message when set to anything but its default, instead of being silently ignored.
"""

from dataclasses import field
from typing import Any


def arg(default: Any, help: str, *, choices: tuple[Any, ...] | None = None, planned: bool = False) -> Any:
    metadata = {"help": help, "planned": planned}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)
