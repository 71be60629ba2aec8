"""Request bodies of the OpenAI-compatible routes, validated strictly (a string where a number belongs is a 400,
not a silent conversion), and their translation into the template's roles."""

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with the given HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    # Unknown fields (presence_penalty, user, ...) are ignored as OpenAI-compatible servers usually do.
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON object, as a string (OpenAI's convention)


class ToolCall(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class Sampling(_Strict):
    model: str | None = None
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = Field(None, max_length=8)  # each one is searched at every decoding step
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # the range transformers' set_seed accepts
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def overrides(self) -> dict[str, Any]:
        """Engine settings: temperature 0 is greedy, any other temperature samples (OpenAI's meaning)."""
        values: dict[str, Any] = {"n": self.n, "stop": self.stop, "seed": self.seed, "top_p": self.top_p,
                                  "max_new_tokens": self.max_completion_tokens or self.max_tokens}
        if self.temperature is not None:
            values["do_sample"] = self.temperature > 0
            if self.temperature > 0:
                values["temperature"] = self.temperature
        if self.top_p is not None and self.temperature is None:
            values["do_sample"] = True
        return values


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]


class ScoreRequest(_Strict):
    model: str | None = None
    messages: list[str] = Field(min_length=1)
    max_length: int | None = Field(None, ge=1)


# Content part type -> the kind of media it carries (`input_audio` holds base64 data, the others a URL).
MEDIA_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio", "input_audio": "audio"}
MEDIA_KINDS = ("image", "video", "audio")


def placeholder(kind: str) -> str:
    """The text that stands for one image/video/audio in a message, as in the datasets (`<image>` unless
    IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER or AUDIO_PLACEHOLDER say otherwise)."""
    return os.getenv(f"{kind.upper()}_PLACEHOLDER") or f"<{kind}>"


@dataclass
class MediaRef:
    """One media content part, not yet read: where it points and where it sits in the request (for errors)."""

    kind: str  # image | video | audio
    url: str  # a data URL, an http(s) URL, a file:// URL or a path
    where: str  # "messages[1].content[2] (image_url)"
    param: str  # "messages.1.content"
    audio_format: str | None = None  # input_audio's declared format


def _media_ref(part: ContentPart, index: int, number: int) -> MediaRef:
    where, param = f"messages[{index}].content[{number}] ({part.type})", f"messages.{index}.content"
    value = (part.model_extra or {}).get(part.type)
    if part.type == "input_audio":
        data, fmt = (value.get("data"), value.get("format")) if isinstance(value, dict) else (None, None)
        if not isinstance(data, str) or not isinstance(fmt, str) or not fmt.isalnum():
            raise APIError(400, f'{where}: expected {{"input_audio": {{"data": <base64>, "format": "wav"}}}}',
                           param, "invalid_value")
        return MediaRef("audio", f"data:audio/{fmt.lower()};base64,{data}", where, param, fmt.lower())
    url = value.get("url") if isinstance(value, dict) else value  # some clients send the URL as a plain string
    if not isinstance(url, str) or not url.strip():
        raise APIError(400, f'{where}: expected {{"{part.type}": {{"url": <data URL, URL or path>}}}}', param,
                       "invalid_value")
    return MediaRef(MEDIA_PARTS[part.type], url.strip(), where, param)


def _content(content: str | list[ContentPart] | None, index: int, role: str,
             media: list[MediaRef]) -> tuple[str, list[tuple[str, str]]]:
    """The message's text, with a placeholder where each media part was (its refs appended to `media`), and
    the (where, text) of its text pieces, so literal placeholders can be refused once media are known."""
    if content is None or isinstance(content, str):
        return content or "", [(f"messages[{index}].content", content or "")]
    texts, pieces = [], []
    for number, part in enumerate(content):
        if part.type == "text":
            texts.append(part.text or "")
            pieces.append((f"messages[{index}].content[{number}]", part.text or ""))
        elif part.type in MEDIA_PARTS:
            if role != "user":
                raise APIError(400, f"messages[{index}].content[{number}]: `{part.type}` parts are accepted in "
                               f"user messages only, not in a {role} message", f"messages.{index}.content",
                               "unsupported_content")
            ref = _media_ref(part, index, number)
            media.append(ref)
            texts.append(placeholder(ref.kind))
        else:
            raise APIError(400, f"messages[{index}].content[{number}]: unknown content part type `{part.type}`; "
                           f"expected text, {', '.join(MEDIA_PARTS)}", f"messages.{index}.content",
                           "unsupported_content")
    return "".join(texts), pieces


def _calls_json(message: ChatMessage, index: int) -> str:
    calls = []
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise APIError(400, f"messages[{index}]: tool call arguments are not valid JSON: {err.msg}",
                           f"messages.{index}.tool_calls") from err
        calls.append({"name": call.function.name, "arguments": arguments})
    return json.dumps(calls, ensure_ascii=False)


def to_conversation(messages: list[ChatMessage]) -> tuple[list[dict[str, str]], str | None, list[MediaRef]]:
    """OpenAI messages -> (template messages, system prompt, media parts in order of appearance). Each media part
    becomes its kind's placeholder at its place in the text; consecutive tool results become one turn."""
    if not messages:
        raise APIError(400, "`messages` is empty: send at least one user message", "messages")
    system = None
    out: list[dict[str, str]] = []
    media: list[MediaRef] = []
    pieces: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        content, message_pieces = _content(message.content, i, message.role, media)
        pieces += message_pieces
        if message.role in ("system", "developer"):
            if i != 0:
                raise APIError(400, f"messages[{i}]: a system message may only come first", f"messages.{i}.role")
            system = content
        elif message.role == "user":
            out.append({"role": "user", "content": content})
        elif message.role == "assistant" and message.tool_calls:
            out.append({"role": "function", "content": _calls_json(message, i)})
        elif message.role == "assistant":
            out.append({"role": "assistant", "content": content})
        elif out and out[-1]["role"] == "observation":  # several results of one multi-call turn
            out[-1]["content"] += "\n" + content
        else:
            out.append({"role": "observation", "content": content})
    if media:  # a typed placeholder would be taken for one more media item than the request carries
        for where, text in pieces:
            for kind in MEDIA_KINDS:
                if placeholder(kind) in text:
                    index = where.split("[")[1].split("]")[0]
                    raise APIError(400, f"{where}: the text contains `{placeholder(kind)}`, which stands for a "
                                   f"{kind} part in a request with media; send the {kind} as a content part "
                                   "instead", f"messages.{index}.content", "invalid_value")
    user_side = ("user", "observation")
    for i, message in enumerate(out):
        if (message["role"] in user_side) != (i % 2 == 0):
            raise APIError(400, "messages must alternate user (or tool results) and assistant (or tool calls), "
                           "starting and ending with a user message, after an optional first system message",
                           "messages")
    if not out or out[-1]["role"] not in user_side:
        raise APIError(400, "the last message must come from the user (or be a tool result)", "messages")
    return out, system, media


def select_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The function schemas to offer: none for tool_choice "none", one when a function is named."""
    if not request.tools or request.tool_choice == "none":
        return None
    functions = [tool.function.model_dump(exclude_none=True) for tool in request.tools]
    choice = request.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [f for f in functions if f["name"] == name]
        if not chosen:
            raise APIError(400, f"tool_choice names `{name}`, which is not among `tools`", "tool_choice")
        return chosen
    return functions
