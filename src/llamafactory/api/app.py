"""The OpenAI-compatible HTTP API over a ChatModel: chat, completions, reward scores and the model list.

Generation is slow and memory-bound, so at most `max_concurrent` requests generate at once; up to `max_queue`
more wait their turn and any beyond that get 429 at once, which a client can retry, instead of piling up.
"""

import asyncio
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chat.base import RequestError
from ..chat.hf_engine import StreamInfo
from ..extras.logging import get_logger
from .media import ALLOW_URLS_ENV, MAX_MB_ENV, MEDIA_DIR_ENV, MediaSettings, load_media
from .protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ScoreRequest,
    select_tools,
    to_conversation,
)

logger = get_logger(__name__)
# The last event of a stream that failed midway (OpenAI's error shape; the details stay in the server log).
STREAM_ERROR = json.dumps({"error": {"message": "internal error: see the server log", "type": "server_error",
                                     "param": None, "code": None}})

PARAM_NAMES = {"max_new_tokens": "max_tokens"}  # engine setting -> the request field a client sent


@dataclass
class Settings:
    model_name: str = "llamafactory"
    api_key: str | None = None
    max_concurrent: int = 1
    max_queue: int = 16
    retry_after: int = 1
    media_dir: str | None = None  # API_MEDIA_DIR: the one folder image/audio/video paths may point into
    allow_media_urls: bool = False  # API_ALLOW_MEDIA_URLS=1: fetch http(s) media URLs
    max_media_bytes: int = 20 * 2**20  # API_MEDIA_MAX_MB: per media item

    def media(self) -> MediaSettings:
        return MediaSettings(self.media_dir, self.allow_media_urls, self.max_media_bytes)

    @classmethod
    def from_env(cls) -> "Settings":
        def number(name: str, default: int, low: int) -> int:
            raw = os.getenv(name, "").strip()
            try:
                value = int(raw) if raw else default
            except ValueError:
                value = -1
            if value < low:
                from ..extras.errors import ConfigError

                raise ConfigError(f"{name} must be an integer of at least {low}, got `{raw}`")
            return value

        media_dir = os.getenv(MEDIA_DIR_ENV) or None
        if media_dir is not None and not os.path.isdir(media_dir):
            from ..extras.errors import ConfigError

            raise ConfigError(f"{MEDIA_DIR_ENV} must name an existing folder, got `{media_dir}`")
        allow_urls = os.getenv(ALLOW_URLS_ENV, "0").strip().lower() in ("1", "true", "yes", "y", "on")
        return cls(model_name=os.getenv("API_MODEL_NAME") or "llamafactory", api_key=os.getenv("API_KEY") or None,
                   max_concurrent=number("MAX_CONCURRENT", 1, 1), max_queue=number("MAX_QUEUE", 16, 0),
                   media_dir=media_dir, allow_media_urls=allow_urls,
                   max_media_bytes=number(MAX_MB_ENV, 20, 1) * 2**20)


class Limiter:
    """A semaphore with a bounded waiting line; a request that finds the line full is refused with 429."""

    def __init__(self, max_concurrent: int, max_queue: int, retry_after: int) -> None:
        self.max_concurrent, self.max_queue, self.retry_after = max_concurrent, max_queue, retry_after
        self.running = 0
        self.waiting = 0
        self._free: asyncio.Condition | None = None

    async def acquire(self) -> "Slot":
        if self._free is None:
            self._free = asyncio.Condition()
        async with self._free:
            if self.running >= self.max_concurrent:
                if self.waiting >= self.max_queue:
                    raise APIError(429, f"the server is busy ({self.running} requests running, {self.waiting} "
                                   "waiting); retry later", None, "rate_limit_exceeded", "rate_limit_error",
                                   {"Retry-After": str(self.retry_after)})
                self.waiting += 1
                try:
                    await self._free.wait_for(lambda: self.running < self.max_concurrent)
                finally:
                    self.waiting -= 1
            self.running += 1
        return Slot(self)

    async def _release(self) -> None:
        assert self._free is not None
        async with self._free:
            self.running -= 1
            self._free.notify()


class Slot:
    """One running request's place; releasing twice is harmless (a stream releases on end and on disconnect)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter, self.held = limiter, True

    async def release(self) -> None:
        if self.held:
            self.held = False
            await self.limiter._release()


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _request_error(err: RequestError) -> APIError:
    param = PARAM_NAMES.get(err.param or "", err.param)
    code = "context_length_exceeded" if "context" in err.message else "invalid_value"
    return APIError(400, err.message, param, code)


async def _parse(request: Request, model: type) -> Any:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        if first.get("type") == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {first.get('msg')}", None, "invalid_json") from err
        raise APIError(400, f"{where or 'body'}: {first.get('msg')}", where, "invalid_type"
                       if "type" in str(first.get("type")) else "invalid_value") from err


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _tool_calls(calls: list[dict[str, Any]], streaming: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}}
        out.append({"index": i, **item} if streaming else item)
    return out


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def create_app(chat_model: Any, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; `chat_model` is a ChatModel (or anything with its async methods)."""
    settings = settings or Settings()
    limiter = Limiter(settings.max_concurrent, settings.max_queue, settings.retry_after)
    media_settings = settings.media()

    async def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {settings.api_key}".encode()):  # constant time
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <API_KEY>`", None,
                           "invalid_api_key", "authentication_error")

    # With a key, the interactive docs are off too: FastAPI serves them outside the app's dependencies.
    docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.api_key else {}
    app = FastAPI(title="llamafactory API", dependencies=[Depends(check_key)], **docs)
    app.state.limiter = limiter

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, err: APIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, err: RequestError) -> JSONResponse:
        return _error_response(_request_error(err))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error_response(APIError(400, str(err.errors()[:1]), None, "invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _error_response(APIError(err.status_code, str(err.detail), None, code))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, err: Exception) -> JSONResponse:
        logger.exception("request failed")  # the details stay in the server's log, not in the answer
        return _error_response(APIError(500, "internal error: see the server log", None, None, "server_error"))

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "llamafactory"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        body: ChatCompletionRequest = await _parse(request, ChatCompletionRequest)
        messages, system, refs = to_conversation(body.messages)
        tools = select_tools(body)
        if chat_model.is_reward_model:
            raise APIError(400, "this server hosts a reward model: use POST /v1/score/evaluation", "model")
        if body.stream:
            return await _stream_chat(body, messages, system, tools, refs)
        slot = await limiter.acquire()  # media are decoded inside the slot, so MAX_CONCURRENT bounds their memory too
        try:
            media = await _load_media(refs)
            responses = await chat_model.achat(messages, system, tools, **media, **body.overrides())
        except RequestError as err:
            raise _request_error(err) from err
        finally:
            await slot.release()
        choices = []
        for i, response in enumerate(responses):
            message: dict[str, Any] = {"role": "assistant", "content": response.response_text}
            if response.tool_calls:
                message = {"role": "assistant", "content": None, "tool_calls": _tool_calls(response.tool_calls)}
            choices.append({"index": i, "message": message, "finish_reason": response.finish_reason})
        completion = sum(r.response_length for r in responses)
        return {"id": _new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": settings.model_name, "choices": choices,
                "usage": _usage(responses[0].prompt_length, completion)}

    async def _load_media(refs: list[Any]) -> dict[str, list[Any]]:
        """images=/videos=/audios= only when the request has such media (decoding and downloads off the loop)."""
        return await asyncio.to_thread(load_media, refs, media_settings) if refs else {}

    async def _start_stream(make: Callable[[], Awaitable[AsyncIterator[str]]]) -> tuple[Slot, AsyncIterator[str],
                                                                                       list[str]]:
        """Take a slot, start the stream and take its first piece before answering 200, so errors and 429 still
        get a proper status."""
        slot = await limiter.acquire()
        try:
            agen = await make()
            first = [await agen.__anext__()]
        except StopAsyncIteration:
            first = []
        except RequestError as err:
            await slot.release()
            raise _request_error(err) from err
        except BaseException:
            await slot.release()
            raise
        return slot, agen, first

    async def _stream_chat(body: ChatCompletionRequest, messages: list[dict[str, str]], system: str | None,
                           tools: list[dict[str, Any]] | None, refs: list[Any]) -> EventSourceResponse:
        info = StreamInfo()

        async def make() -> AsyncIterator[str]:
            media = await _load_media(refs)  # inside the slot, like the blocking route
            return chat_model.astream_chat(messages, system, tools, info=info, **media, **body.overrides())

        slot, agen, first = await _start_stream(make)
        ident, created = _new_id("chatcmpl"), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                               "model": settings.model_name,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                              ensure_ascii=False)

        async def events() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                text = "".join(first)
                if not tools:
                    for piece in first:
                        yield chunk({"content": piece})
                async for piece in agen:
                    text += piece
                    if not tools:  # with tools the answer may be a call: it is parsed once complete
                        yield chunk({"content": piece})
                finish = info.finish_reason
                if tools:
                    calls = chat_model.parse_tool_calls(text)
                    if calls:
                        yield chunk({"tool_calls": _tool_calls(calls, streaming=True)})
                        finish = "tool_calls"
                    elif text:
                        yield chunk({"content": text})
                yield chunk({}, finish)
                if (body.stream_options or {}).get("include_usage"):
                    yield json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                                      "model": settings.model_name, "choices": [],
                                      "usage": _usage(info.prompt_length, info.response_length)})
                yield "[DONE]"
            except Exception:  # noqa: BLE001 - the client must learn that the stream failed, not see it just end
                logger.exception("stream failed")
                yield STREAM_ERROR
            finally:
                await agen.aclose()  # stops generation when the client went away
                await slot.release()

        return EventSourceResponse(events(), background=BackgroundTask(slot.release), ping=15)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body: CompletionRequest = await _parse(request, CompletionRequest)
        prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt[:1])
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise APIError(400, "send one prompt per request", "prompt")
        if chat_model.is_reward_model:
            raise APIError(400, "this server hosts a reward model: use POST /v1/score/evaluation", "model")
        ident, created = _new_id("cmpl"), int(time.time())
        if body.stream:
            info = StreamInfo()

            async def make() -> AsyncIterator[str]:
                return chat_model.astream_complete(prompt, info=info, **body.overrides())

            slot, agen, first = await _start_stream(make)

            def chunk(text: str, finish: str | None = None) -> str:
                return json.dumps({"id": ident, "object": "text_completion", "created": created,
                                   "model": settings.model_name,
                                   "choices": [{"index": 0, "text": text, "finish_reason": finish}]},
                                  ensure_ascii=False)

            async def events() -> AsyncIterator[str]:
                try:
                    for piece in first:
                        yield chunk(piece)
                    async for piece in agen:
                        yield chunk(piece)
                    yield chunk("", info.finish_reason)
                    yield "[DONE]"
                except Exception:  # noqa: BLE001 - the client must learn that the stream failed
                    logger.exception("stream failed")
                    yield STREAM_ERROR
                finally:
                    await agen.aclose()
                    await slot.release()

            return EventSourceResponse(events(), background=BackgroundTask(slot.release), ping=15)
        slot = await limiter.acquire()
        try:
            responses = await chat_model.acomplete(prompt, **body.overrides())
        except RequestError as err:
            raise _request_error(err) from err
        finally:
            await slot.release()
        choices = [{"index": i, "text": r.response_text, "finish_reason": r.finish_reason}
                   for i, r in enumerate(responses)]
        return {"id": ident, "object": "text_completion", "created": created, "model": settings.model_name,
                "choices": choices,
                "usage": _usage(responses[0].prompt_length, sum(r.response_length for r in responses))}

    @app.post("/v1/score/evaluation")
    async def score(request: Request) -> dict[str, Any]:
        body: ScoreRequest = await _parse(request, ScoreRequest)
        if not chat_model.is_reward_model:
            raise APIError(400, "this server hosts a generating model; scores need a reward model (serve a "
                           "`stage: rm` output with `stage: rm` in the config)", "model")
        slot = await limiter.acquire()
        try:
            scores = await chat_model.aget_scores(body.messages, max_length=body.max_length)
        except RequestError as err:
            raise _request_error(err) from err
        finally:
            await slot.release()
        return {"id": _new_id("scoreval"), "model": settings.model_name, "scores": scores}

    return app


def run_api(argv: list[str]) -> None:
    """`lmf api cfg.yaml`: load the model once and serve it until interrupted."""
    import uvicorn

    from ..chat.chat_model import ChatModel

    settings = Settings.from_env()
    host = os.getenv("API_HOST", "0.0.0.0")
    raw_port = os.getenv("API_PORT", "8000")
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        from ..extras.errors import ConfigError

        raise ConfigError(f"API_PORT must be a port number, got `{raw_port}`")
    chat_model = ChatModel(argv)
    app = create_app(chat_model, settings)
    kind = "reward model" if chat_model.is_reward_model else "model"
    print(f"Serving {kind} `{settings.model_name}` at http://{host}:{raw_port}/v1 (API docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=int(raw_port), log_level="warning")
