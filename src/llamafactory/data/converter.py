"""Turn each dataset format into one aligned schema, so processors never care where data came from.

Aligned columns: `_prompt` (messages up to the last user turn), `_response` (the answer messages),
`_system` and `_tools` (strings).
"""

from typing import Any

from ..extras.errors import ConfigError
from .parser import DatasetAttr
from .template import ASSISTANT, USER

ALIGNED_COLUMNS = ("_prompt", "_response", "_system", "_tools")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def convert_alpaca(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    def get(key: str) -> Any:
        column = attr.column(key)
        if not column:
            return None
        if column not in example:
            raise ConfigError(f"dataset `{attr.name}` ({attr.path}), row {row}: column `{column}` (the `{key}` "
                              f"column) is missing; columns present: {', '.join(sorted(example))}")
        return example[column]

    prompt = []
    history = get("history") or []
    if not isinstance(history, list):
        raise ConfigError(f"dataset `{attr.name}` ({attr.path}), row {row}: `history` must be a list of "
                          "[query, response] pairs")
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise ConfigError(f"dataset `{attr.name}` ({attr.path}), row {row}: each `history` item must be a "
                              f"[query, response] pair, got {turn!r}")
        prompt.append({"role": USER, "content": _text(turn[0])})
        prompt.append({"role": ASSISTANT, "content": _text(turn[1])})
    query = [_text(get("prompt")), _text(get("query"))]
    prompt.append({"role": USER, "content": "\n".join(part for part in query if part)})
    output = get("response")
    response = [] if output is None else [{"role": ASSISTANT, "content": _text(output)}]
    return {"_prompt": prompt, "_response": response, "_system": _text(get("system")), "_tools": _text(get("tools"))}


CONVERTERS = {"alpaca": convert_alpaca}


def align_dataset(dataset: Any, attr: DatasetAttr, num_proc: int | None, overwrite_cache: bool) -> Any:
    convert = CONVERTERS[attr.formatting]
    return dataset.map(
        lambda example, idx: convert(example, attr, idx),
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        load_from_cache_file=not overwrite_cache,
        desc=f"Converting format of dataset {attr.name}",
    )
