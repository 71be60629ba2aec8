"""ChatModel: the one entry point that chat, the API and the web chat use to talk to a model.

The engines block (generation runs on the calling thread); the `a*` twins run them in worker threads so an
event loop (the API server) stays responsive, and streaming crosses threads through a queue.
"""

import asyncio
import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..extras.errors import UserError
from ..hparams.parser import get_infer_args
from .base import RequestError, Response
from .hf_engine import HuggingfaceEngine, StreamInfo

__all__ = ["ChatModel", "RequestError", "Response", "StreamInfo", "run_chat"]

_END = object()


def _args_to_argv(args: list[str] | dict[str, Any] | None) -> list[str]:
    """A LlamaFactory-style dict of keys is accepted as well as CLI arguments (JSON values are valid YAML)."""
    if isinstance(args, dict):
        return [f"{key}={json.dumps(value)}" for key, value in args.items()]
    return list(args or [])


def check_backend(name: str) -> None:
    """vLLM and SGLang need their package and a CUDA GPU; say which is missing in one line."""
    if name == "huggingface":
        return
    package = {"vllm": "vllm", "sglang": "sglang"}.get(name)
    if package is None:
        raise UserError(f"unknown infer_backend `{name}`; use huggingface")
    if importlib.util.find_spec(package) is None:
        raise UserError(f"infer_backend `{name}` needs the {package} package (`pip install {package}`) and a CUDA "
                        "GPU; use `infer_backend: huggingface` here")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"infer_backend `{name}` needs a CUDA GPU and none is visible; use "
                        "`infer_backend: huggingface`")
    raise UserError(f"infer_backend `{name}` is not supported yet in llamafactory; use `infer_backend: huggingface`")


class ChatModel:
    def __init__(self, args: list[str] | dict[str, Any] | None = None) -> None:
        model_args, data_args, finetuning_args, generating_args = get_infer_args(_args_to_argv(args))
        check_backend(model_args.infer_backend)  # the parser refuses vllm/sglang first; kept for direct callers
        self.engine = HuggingfaceEngine(model_args, data_args, finetuning_args, generating_args)

    @property
    def is_reward_model(self) -> bool:
        return self.engine.is_reward_model

    # ------------------------------------------------------------------------------------ blocking
    def chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
             images: list[Any] | None = None, videos: list[Any] | None = None, audios: list[Any] | None = None,
             **overrides: Any) -> list[Response]:
        """Answers (n of them) to a conversation ending with a user turn; tool calls parsed when `tools` is set.

        Media (paths, PIL images, bytes; a video may be a list of frames) go with a multimodal model: each
        `<image>` / `<video>` / `<audio>` placeholder in the messages stands for the next item, in order."""
        return self.engine.chat(messages, system, tools, images=images, videos=videos, audios=audios, **overrides)

    def stream_chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
                    images: list[Any] | None = None, videos: list[Any] | None = None,
                    audios: list[Any] | None = None, **overrides: Any) -> Iterator[str]:
        yield from self.engine.stream_chat(messages, system, tools, images=images, videos=videos, audios=audios,
                                           **overrides)

    def complete(self, prompt: str, **overrides: Any) -> list[Response]:
        """Continue a plain prompt (no chat template)."""
        return self.engine.generate(self.engine.encode_text(prompt), **overrides)

    def stream_complete(self, prompt: str, **overrides: Any) -> Iterator[str]:
        yield from self.engine.stream(self.engine.encode_text(prompt), **overrides)

    def get_scores(self, texts: list[str], **kwargs: Any) -> list[float]:
        return self.engine.get_scores(texts, **kwargs)

    def parse_tool_calls(self, text: str) -> list[dict[str, Any]]:
        return self.engine.parse_tool_calls(text)

    # ------------------------------------------------------------------------------------ async twins
    async def achat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
                    **overrides: Any) -> list[Response]:
        return await asyncio.to_thread(self.chat, messages, system, tools, **overrides)  # media ride in overrides

    async def acomplete(self, prompt: str, **overrides: Any) -> list[Response]:
        return await asyncio.to_thread(self.complete, prompt, **overrides)

    async def aget_scores(self, texts: list[str], **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(self.get_scores, texts, **kwargs)

    async def astream_chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
                           **overrides: Any) -> AsyncIterator[str]:
        def start(cancel: threading.Event) -> Iterator[str]:
            return self.engine.stream_chat(messages, system, tools, cancel=cancel, **overrides)

        async for piece in _astream(start):
            yield piece

    async def astream_complete(self, prompt: str, **overrides: Any) -> AsyncIterator[str]:
        def start(cancel: threading.Event) -> Iterator[str]:
            return self.engine.stream(self.engine.encode_text(prompt), cancel=cancel, **overrides)

        async for piece in _astream(start):
            yield piece


async def _astream(start: Callable[[threading.Event], Iterator[str]]) -> AsyncIterator[str]:
    """Run a blocking stream in a thread; leaving early (break, cancellation, disconnect) stops generation."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    cancel = threading.Event()

    def send(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(pieces.put_nowait, (item, error))
        except RuntimeError:  # the loop closed: nobody is listening any more
            cancel.set()

    stopped: asyncio.Future[None] = loop.create_future()

    def mark_stopped() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def produce() -> None:
        try:
            for piece in start(cancel):
                if cancel.is_set():
                    break
                send(piece)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            send(None, err)
        else:
            send(_END)
        finally:
            try:
                loop.call_soon_threadsafe(mark_stopped)
            except RuntimeError:  # the loop closed
                pass

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            item, error = await pieces.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        cancel.set()
        # Return only once generation has really stopped (at most one more decoding step), so a server's
        # concurrency slot is not handed to the next request while this one still holds the model.
        await asyncio.shield(stopped)


def _print_calls(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        print(f"Tool call: {call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})", flush=True)


def _pop_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """Take `--name value` / `--name=value` out of argv (chat-only options that are not config keys)."""
    rest, value, i = [], None, 0
    while i < len(argv):
        item = argv[i]
        if item == f"--{name}" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if item.startswith(f"--{name}="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
        i += 1
    return rest, value


def run_chat(argv: list[str]) -> None:
    """`lmf chat cfg.yaml [--tools tools.json]`: a terminal conversation; works with stdin piped in, one
    message per line. The system prompt is the template's `default_system` (override it with that key)."""
    import sys

    argv, tools_path = _pop_option(list(argv), "tools")
    tools = None
    if tools_path:
        try:
            with open(tools_path, encoding="utf-8") as f:
                tools = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"--tools `{tools_path}`: cannot read a JSON list of function schemas: {err}") from err
    chat_model = ChatModel(argv)
    if chat_model.is_reward_model:
        raise UserError("this config loads a reward model (`stage: rm`): it scores texts and cannot chat; serve it "
                        "with `lmf api` and POST /v1/score/evaluation")
    interactive = sys.stdin.isatty()
    messages: list[dict[str, str]] = []
    print("Welcome to the chat. Type `clear` to forget the history, `exit` to quit.", flush=True)
    while True:
        awaiting_result = bool(messages) and messages[-1]["role"] == "function"
        label = "Tool result: " if awaiting_result else "\nUser: "
        try:
            query = input(label)
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not interactive:
            print(query)
        query = query.strip()
        if query == "exit":
            return
        if query == "clear":
            messages = []
            print("History has been removed.", flush=True)
            continue
        if not query:
            continue
        messages.append({"role": "observation" if awaiting_result else "user", "content": query})
        print("Assistant: ", end="", flush=True)
        answer = ""
        try:
            for piece in chat_model.stream_chat(messages, tools=tools):
                print(piece, end="", flush=True)
                answer += piece
        except RequestError as err:  # e.g. the conversation outgrew the context: forget it and go on
            messages = []
            print(f"\n{err.message}; history has been removed.", flush=True)
            continue
        print(flush=True)
        calls = chat_model.parse_tool_calls(answer) if tools else []
        if calls:
            _print_calls(calls)
            messages.append({"role": "function", "content": json.dumps(calls, ensure_ascii=False)})
        else:
            messages.append({"role": "assistant", "content": answer})
