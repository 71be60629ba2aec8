"""What every inference engine shares: the response shape, request errors and per-request settings.

Kept free of torch so the API can validate a request (and answer 400) without touching the model.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any

# Per-request settings an engine accepts beside GeneratingArguments' own fields.
EXTRA_KEYS = ("stop", "seed", "n")


class RequestError(ValueError):
    """A request the caller can fix (bad value, too long); `param` names the offending field for API errors."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class Response:
    response_text: str
    response_length: int
    prompt_length: int
    finish_reason: str  # "stop", "length" or "tool_calls"
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments": dict}


@dataclass
class RequestSettings:
    """GeneratingArguments after a request's overrides, plus what only a request can ask for."""

    generating: Any
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    explicit_max_new_tokens: bool = False


def _check_type(key: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise RequestError(f"`{key}` must be a boolean, got {value!r:.40}", key)
    if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, expected)):
        raise RequestError(f"`{key}` must be {'an integer' if expected is int else 'a number'}, got {value!r:.40}",
                           key)
    return value


def resolve_settings(generating_args: Any, overrides: dict[str, Any]) -> RequestSettings:
    """Apply a request's overrides on the configured decoding settings, refusing unknown or out-of-range ones.

    `None` means "not given" so callers can pass optional fields straight through; temperature 0 means greedy,
    as in OpenAI's API.
    """
    kinds = {f.name: f.type for f in fields(generating_args)}
    kinds = {k: {"bool": bool, "int": int, "float": float}.get(v, v) if isinstance(v, str) else v
             for k, v in kinds.items()}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(kinds) - set(EXTRA_KEYS))
    if unknown:
        raise RequestError(f"unknown generation setting `{unknown[0]}`", unknown[0])
    changes = {k: _check_type(k, v, kinds[k]) for k, v in given.items() if k in kinds}
    if changes.get("temperature") == 0:
        changes["do_sample"] = False
    generating = replace(generating_args, **changes)
    for key in ("temperature", "top_p"):
        value = getattr(generating, key)
        if value < 0 or (key == "top_p" and value > 1):
            raise RequestError(f"`{key}` out of range: {value}", key)
    for key in ("max_new_tokens", "num_beams", "top_k"):
        if key in changes and changes[key] < 1:
            raise RequestError(f"`{key}` must be at least 1, got {changes[key]}", key)
    if generating.repetition_penalty <= 0:
        raise RequestError("`repetition_penalty` must be positive", "repetition_penalty")
    stop = given.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("`stop` must be a non-empty string or a list of them", "stop")
    seed = _check_type("seed", given["seed"], int) if "seed" in given else None
    n = _check_type("n", given.get("n", 1), int)
    if n < 1:
        raise RequestError(f"`n` must be at least 1, got {n}", "n")
    if n > 1 and not generating.do_sample and generating.num_beams < n:
        raise RequestError("`n` > 1 needs sampling (temperature > 0, do_sample) or num_beams >= n: greedy decoding "
                           "would return the same answer n times", "n")
    return RequestSettings(generating, stop, seed, n, "max_new_tokens" in changes)
