"""Turn each dataset format into one aligned schema, so processors never care where data came from.

Aligned columns:
- `_prompt`: messages up to and including the last user-side turn (user or observation);
- `_response`: the answer (one message), the [chosen, rejected] pair for ranking data, or [] when absent;
- `_system`, `_tools`: strings (`_tools` is a JSON list of function schemas);
- `_kto_tag`: True/False for feedback data, else None;
- `_drop`: why the row breaks its format ("" when it is fine). The loader drops such rows and reports
  how many, why and where, per dataset.
"""

import json
from typing import Any

from ..extras.errors import ConfigError
from .parser import DatasetAttr
from .template import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER

ALIGNED_COLUMNS = ("_prompt", "_response", "_system", "_tools", "_kto_tag")
USER_SIDE = (USER, OBSERVATION)
ASSISTANT_SIDE = (ASSISTANT, FUNCTION)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _tools_text(value: Any) -> str:
    """Tools as a JSON list of function schemas, whether given as a string, a list or OpenAI's wrappers."""
    if value in (None, "", []):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value  # the tool formatter reports unreadable schemas when it renders them
    if isinstance(value, dict):
        value = [value]
    functions = [t["function"] if isinstance(t, dict) and t.get("type") == "function" and "function" in t else t
                 for t in value]
    return json.dumps(functions, ensure_ascii=False)


class _Row:
    """Column access for one row, with errors that name the dataset, row and column."""

    def __init__(self, example: dict[str, Any], attr: DatasetAttr, row: int) -> None:
        self.example, self.attr, self.row = example, attr, row

    def get(self, key: str) -> Any:
        column = self.attr.column(key)
        if not column:
            return None
        if column not in self.example:
            raise ConfigError(f"dataset `{self.attr.name}` ({self.attr.path}), row {self.row}: column `{column}` "
                              f"(the `{key}` column) is missing; columns present: {', '.join(sorted(self.example))}")
        return self.example[column]

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"dataset `{self.attr.name}` ({self.attr.path}), row {self.row}: {message}")


def _result(prompt: list, response: list, system: Any, tools: Any, kto_tag: Any, drop: str) -> dict[str, Any]:
    return {"_prompt": prompt, "_response": response, "_system": _text(system), "_tools": _tools_text(tools),
            "_kto_tag": None if kto_tag is None else bool(kto_tag), "_drop": drop}


def _check_turns(prompt: list[dict[str, str]], response: list[dict[str, str]], ranking: bool) -> str:
    """The reason a conversation breaks the format, or ""."""
    if not prompt:
        return "no prompt"
    for i, message in enumerate(prompt):
        expected = USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE
        if message["role"] not in expected:
            return "wrong role order"
    if len(prompt) % 2 == 0:
        return "odd number of turns"
    if not prompt[-1]["content"].strip():
        return "empty prompt"
    if ranking:
        if len(response) != 2 or any(m["role"] not in ASSISTANT_SIDE for m in response):
            return "chosen/rejected missing or not assistant turns"
        if any(not m["content"].strip() for m in response):
            return "empty chosen or rejected response"
    elif response and not response[0]["content"].strip():
        return "empty response"
    return ""


def convert_alpaca(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    r = _Row(example, attr, row)
    prompt = []
    history = r.get("history") or []
    if not isinstance(history, list):
        raise r.fail("`history` must be a list of [query, response] pairs")
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise r.fail(f"each `history` item must be a [query, response] pair, got {turn!r}")
        prompt.append({"role": USER, "content": _text(turn[0])})
        prompt.append({"role": ASSISTANT, "content": _text(turn[1])})
    query = [_text(r.get("prompt")), _text(r.get("query"))]
    prompt.append({"role": USER, "content": "\n".join(part for part in query if part)})
    if attr.ranking:
        chosen, rejected = r.get("chosen"), r.get("rejected")
        response = [{"role": ASSISTANT, "content": _text(chosen)}, {"role": ASSISTANT, "content": _text(rejected)}]
    else:
        output = r.get("response")
        response = [] if output is None else [{"role": ASSISTANT, "content": _text(output)}]
    return _result(prompt, response, r.get("system"), r.get("tools"), r.get("kto_tag"),
                   _check_turns(prompt, response, attr.ranking))


SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


def _role_map(tags: dict[str, str]) -> dict[str, str]:
    return {tags["user_tag"]: USER, tags["assistant_tag"]: ASSISTANT, tags["observation_tag"]: OBSERVATION,
            tags["function_tag"]: FUNCTION, tags["system_tag"]: SYSTEM}


def _message(raw: Any, tags: dict[str, str], roles: dict[str, str], r: _Row) -> dict[str, str] | None:
    if not isinstance(raw, dict) or tags["role_tag"] not in raw:
        raise r.fail(f"each message must be an object with a `{tags['role_tag']}` key, got {raw!r:.80}")
    role = roles.get(raw[tags["role_tag"]])
    if role is None:
        return None
    return {"role": role, "content": _text(raw.get(tags["content_tag"]))}


def convert_sharegpt(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    r = _Row(example, attr, row)
    tags = {**(OPENAI_TAGS if attr.formatting == "openai" else SHAREGPT_TAGS), **attr.tags}
    roles = _role_map(tags)
    raw_messages = r.get("messages") or []
    if not isinstance(raw_messages, list):
        raise r.fail("the messages column must be a list of messages")
    messages = []
    for raw in raw_messages:
        message = _message(raw, tags, roles, r)
        if message is None:
            return _result([], [], "", "", None, f"unknown role `{raw.get(tags['role_tag'])}`")
        messages.append(message)
    system = r.get("system")
    if messages and messages[0]["role"] == SYSTEM:
        system = messages.pop(0)["content"]
    if any(m["role"] == SYSTEM for m in messages):
        return _result([], [], "", "", None, "system message after the first turn")
    if attr.ranking:
        prompt = messages
        pair = [_message(r.get("chosen"), tags, roles, r), _message(r.get("rejected"), tags, roles, r)]
        response = [m for m in pair if m is not None]
    elif len(messages) % 2 == 1:
        return _result([], [], "", "", None, "odd number of turns")
    else:
        prompt, response = messages[:-1], messages[-1:]
    return _result(prompt, response, system, r.get("tools"), r.get("kto_tag"),
                   _check_turns(prompt, response, attr.ranking))


def _openai_calls(message: dict[str, Any]) -> str:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # kept as text; the tool formatter renders it as given
        calls.append({"name": function.get("name", ""), "arguments": arguments})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def convert_openai(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    """OpenAI chat messages: assistant `tool_calls` become function turns, `tool` messages observations."""
    r = _Row(example, attr, row)
    raw_messages = r.get("messages") or []
    if not isinstance(raw_messages, list):
        raise r.fail("the messages column must be a list of messages")
    rewritten: list[dict[str, Any]] = []
    for raw in raw_messages:
        if not isinstance(raw, dict):
            raise r.fail(f"each message must be an object, got {raw!r:.80}")
        content = raw.get("content")
        if isinstance(content, list):  # content parts: keep the text ones (media arrive with multimodal data)
            raw = {**raw, "content": "".join(p.get("text", "") for p in content if isinstance(p, dict))}
        if raw.get("role") == "assistant" and raw.get("tool_calls"):
            if _text(raw.get("content")).strip():
                return _result([], [], "", "", None, "assistant message with both content and tool_calls")
            raw = {"role": "function_call", "content": _openai_calls(raw)}
        if raw.get("role") == "tool" and rewritten and rewritten[-1].get("role") == "tool":
            rewritten[-1] = {"role": "tool", "content": rewritten[-1]["content"] + "\n" + _text(raw.get("content"))}
            continue  # results of parallel calls form one observation turn
        rewritten.append(raw)
    column = attr.column("messages")
    return convert_sharegpt({**example, column: rewritten}, attr, row)


CONVERTERS = {"alpaca": convert_alpaca, "sharegpt": convert_sharegpt, "openai": convert_openai}


def align_dataset(dataset: Any, attr: DatasetAttr, num_proc: int | None, overwrite_cache: bool,
                  needs_response: bool = True) -> Any:
    """Convert every row; with `needs_response` (training stages), a row without an answer is marked too."""
    convert = CONVERTERS[attr.formatting]

    def align(example: dict[str, Any], idx: int) -> dict[str, Any]:
        out = convert(example, attr, idx)
        if needs_response and not out["_drop"] and not out["_response"]:
            out["_drop"] = "no response"
        return out

    from datasets import IterableDataset

    kwargs = {} if isinstance(dataset, IterableDataset) else dict(
        num_proc=num_proc, load_from_cache_file=not overwrite_cache, desc=f"Converting format of dataset {attr.name}")
    return dataset.map(
        align,
        with_indices=True,
        remove_columns=dataset.column_names,
        **kwargs,
    )
