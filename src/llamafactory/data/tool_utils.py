"""Tool formats: how a model family is told about tools, how its calls look, and how to read them back.

Each format has three functions: `tools` (JSON schemas -> the text put in the system prompt), `calls`
(calls -> the text the model is trained to produce) and `parse` (model output -> calls, or the text
itself when it holds no call). A call is {"name": str, "arguments": dict}.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Call = dict[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def load_calls(content: str) -> list[Call]:
    """The calls of a function turn (one call or a list of calls, as JSON)."""
    value = json.loads(content)
    calls = value if isinstance(value, list) else [value]
    out = []
    for call in calls:
        if not isinstance(call, dict) or "name" not in call:
            raise ValueError(f"a function call needs a `name`, got {call!r:.80}")
        arguments = call.get("arguments", call.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        out.append({"name": call["name"], "arguments": arguments})
    return out


def load_tools(text: str) -> list[dict[str, Any]]:
    if not text:
        return []
    tools = json.loads(text)
    tools = tools if isinstance(tools, list) else [tools]
    return [t["function"] if isinstance(t, dict) and t.get("type") == "function" else t for t in tools]


# ------------------------------------------------------------------------------------------- default
def _default_tools(tools: list[dict[str, Any]]) -> str:
    lines = ["You can use these tools:"]
    for tool in tools:
        params = tool.get("parameters", {}) or {}
        required = set(params.get("required", []))
        lines.append(f"- {tool['name']}: {tool.get('description', '')}".rstrip())
        for arg, spec in (params.get("properties", {}) or {}).items():
            flag = "required" if arg in required else "optional"
            lines.append(f"    {arg} ({spec.get('type', 'any')}, {flag}): {spec.get('description', '')}".rstrip())
    names = ", ".join(t["name"] for t in tools)
    lines.append(f"To use a tool, answer with one block per call:\nAction: a tool name (one of {names})\n"
                 "Action Input: the arguments as a JSON object")
    return "\n".join(lines)


def _default_calls(calls: list[Call]) -> str:
    return "".join(f"Action: {c['name']}\nAction Input: {_dumps(c['arguments'])}\n" for c in calls)


_DEFAULT_CALL = re.compile(r"Action:\s*(.+?)\s*\nAction Input:\s*(\{.*?\})\s*(?=\nAction:|$)", re.S)


def _default_parse(text: str) -> list[Call] | str:
    calls = []
    for name, arguments in _DEFAULT_CALL.findall(text):
        try:
            calls.append({"name": name.strip(), "arguments": json.loads(arguments)})
        except json.JSONDecodeError:
            return text
    return calls or text


# ------------------------------------------------------------------------------------------- qwen
def _qwen_tools(tools: list[dict[str, Any]]) -> str:
    # Qwen2.5/Qwen3's own wording (it is the prompt format these models were trained on).
    schemas = "".join("\n" + _dumps({"type": "function", "function": t}) for t in tools)
    return ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
            f"{schemas}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
            "<args-json-object>}\n</tool_call>")


def _qwen_calls(calls: list[Call]) -> str:
    return "\n".join(f"<tool_call>\n{_dumps({'name': c['name'], 'arguments': c['arguments']})}\n</tool_call>"
                     for c in calls)


_QWEN_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def _json_calls(blobs: list[str], text: str, key: str = "arguments") -> list[Call] | str:
    calls = []
    for blob in blobs:
        try:
            value = json.loads(blob)
        except json.JSONDecodeError:
            return text
        if not isinstance(value, dict) or "name" not in value:
            return text
        calls.append({"name": value["name"], "arguments": value.get(key, value.get("arguments", {}))})
    return calls or text


def _qwen_parse(text: str) -> list[Call] | str:
    return _json_calls(_QWEN_CALL.findall(text), text)


# ------------------------------------------------------------------------------------------- llama3
def _llama3_tools(tools: list[dict[str, Any]]) -> str:
    schemas = "\n\n".join(_dumps({"type": "function", "function": t}) for t in tools)
    return ("Given the following functions, please respond with a JSON for a function call with its proper "
            "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
            "\"parameters\": dictionary of argument name and its value}. Do not use variables.\n\n" + schemas)


def _llama3_calls(calls: list[Call]) -> str:
    return "\n".join(_dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)


def _llama3_parse(text: str) -> list[Call] | str:
    blobs = [line for line in text.strip().splitlines() if line.strip()]
    return _json_calls(blobs, text, key="parameters") if blobs and blobs[0].lstrip().startswith("{") else text


# ------------------------------------------------------------------------------------------- mistral
def _mistral_tools(tools: list[dict[str, Any]]) -> str:
    return "[AVAILABLE_TOOLS] " + _dumps([{"type": "function", "function": t} for t in tools]) + "[/AVAILABLE_TOOLS]"


def _mistral_calls(calls: list[Call]) -> str:
    return "[TOOL_CALLS] " + _dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls])


def _mistral_parse(text: str) -> list[Call] | str:
    body = text.strip()
    if body.startswith("[TOOL_CALLS]"):
        body = body[len("[TOOL_CALLS]"):].strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return text
    items = value if isinstance(value, list) else [value]
    return _json_calls([_dumps(v) for v in items], text)


# ------------------------------------------------------------------------------------------- glm4
def _glm4_tools(tools: list[dict[str, Any]]) -> str:
    sections = "".join(f"\n\n## {t['name']}\n\n{_dumps(t)}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
                       for t in tools)
    intro = ("你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
             "你的任务是针对用户的问题和要求提供适当的答复和支持。")
    return intro + "\n\n# 可用工具" + sections


def _glm4_calls(calls: list[Call]) -> str:
    return "\n".join(f"{c['name']}\n{_dumps(c['arguments'])}" for c in calls)


def _glm4_parse(text: str) -> list[Call] | str:
    name, _, rest = text.strip().partition("\n")
    if not rest:
        return text
    try:
        return [{"name": name.strip(), "arguments": json.loads(rest)}]
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class ToolFormat:
    tools: Callable[[list[dict[str, Any]]], str]
    calls: Callable[[list[Call]], str]
    parse: Callable[[str], list[Call] | str]


TOOL_FORMATS = {
    "default": ToolFormat(_default_tools, _default_calls, _default_parse),
    "qwen": ToolFormat(_qwen_tools, _qwen_calls, _qwen_parse),
    "llama3": ToolFormat(_llama3_tools, _llama3_calls, _llama3_parse),
    "mistral": ToolFormat(_mistral_tools, _mistral_calls, _mistral_parse),
    "glm4": ToolFormat(_glm4_tools, _glm4_calls, _glm4_parse),
}


def get_tool_format(name: str) -> ToolFormat:
    if name not in TOOL_FORMATS:
        raise ValueError(f"unknown tool_format `{name}`; available: {', '.join(TOOL_FORMATS)}")
    return TOOL_FORMATS[name]
