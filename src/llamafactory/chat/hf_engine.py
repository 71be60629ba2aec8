"""The transformers engine: generate with the template's prompt format and stop tokens, streaming or not."""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from threading import Thread
from typing import Any

from ..data.template import get_template_and_fix_tokenizer
from ..model.loader import compute_dtype, load_model, load_tokenizer
from ..model.model_utils.hub import resolve_model


@dataclass
class Response:
    response_text: str
    response_length: int
    prompt_length: int
    finish_reason: str  # "stop" or "length"


class HuggingfaceEngine:
    def __init__(self, model_args: Any, data_args: Any, finetuning_args: Any, generating_args: Any) -> None:
        source = resolve_model(model_args)
        self.tokenizer = load_tokenizer(model_args, source)
        self.tokenizer.padding_side = "left"
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        dtype = compute_dtype(None, finetuning_args, model_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, False, dtype, source)
        self.generating_args = generating_args
        self.stop_ids = self.template.stop_token_ids(self.tokenizer)

    def _inputs(self, messages: list[dict[str, str]], system: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompt = self.template.encode_prompt(self.tokenizer, messages, system)
        # Per-request settings replace the configured ones; to_dict() then drops what does not apply.
        settings = replace(self.generating_args, **{k: v for k, v in overrides.items() if v is not None})
        input_ids = torch.tensor([prompt], device=self.model.device)
        return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), eos_token_id=self.stop_ids,
                    pad_token_id=self.tokenizer.pad_token_id, **settings.to_dict())

    def chat(self, messages: list[dict[str, str]], system: str | None = None, **overrides: Any) -> list[Response]:
        import torch

        inputs = self._inputs(messages, system, overrides)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(**inputs)
        responses = []
        for row in output[:, prompt_len:].tolist():
            ended = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            ids = row if ended is None else row[:ended]
            text = self.tokenizer.decode(ids, skip_special_tokens=self.generating_args.skip_special_tokens)
            responses.append(Response(text, len(ids), prompt_len, "stop" if ended is not None else "length"))
        return responses

    def stream_chat(self, messages: list[dict[str, str]], system: str | None = None, **overrides: Any) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages, system, overrides)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=self.generating_args.skip_special_tokens)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, streamer=streamer)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
                failure.append(err)
                streamer.end()

        thread = Thread(target=generate, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failure:
            raise failure[0]
