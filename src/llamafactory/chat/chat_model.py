"""ChatModel: the one entry point that chat, the API and the web UI use to talk to a model."""

from collections.abc import Iterator
from typing import Any

from ..extras.errors import NotBuiltError
from ..hparams.parser import get_infer_args
from .hf_engine import HuggingfaceEngine, Response


class ChatModel:
    def __init__(self, argv: list[str] | None = None) -> None:
        model_args, data_args, finetuning_args, generating_args = get_infer_args(argv or [])
        if model_args.infer_backend != "huggingface":  # the parser refuses these first; kept as a guard
            raise NotBuiltError(f"infer_backend `{model_args.infer_backend}` is not supported yet")
        self.engine = HuggingfaceEngine(model_args, data_args, finetuning_args, generating_args)

    def chat(self, messages: list[dict[str, str]], system: str | None = None, **overrides: Any) -> list[Response]:
        return self.engine.chat(messages, system, **overrides)

    def stream_chat(self, messages: list[dict[str, str]], system: str | None = None, **overrides: Any) -> Iterator[str]:
        yield from self.engine.stream_chat(messages, system, **overrides)


def run_chat(argv: list[str]) -> None:
    """`lmf chat cfg.yaml`: a terminal conversation; works with stdin piped in, one message per line."""
    import sys

    chat_model = ChatModel(argv)
    interactive = sys.stdin.isatty()
    messages: list[dict[str, str]] = []
    print("Welcome to the chat. Type `clear` to forget the history, `exit` to quit.", flush=True)
    while True:
        try:
            query = input("\nUser: ")
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
        messages.append({"role": "user", "content": query})
        print("Assistant: ", end="", flush=True)
        answer = ""
        for piece in chat_model.stream_chat(messages):
            print(piece, end="", flush=True)
            answer += piece
        print(flush=True)
        messages.append({"role": "assistant", "content": answer})
