"""The transformers engine: generate with the template's prompt format and stop tokens, streaming or not,
and score texts with a reward model (a `stage: rm` output loaded with its value head)."""

import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..data.mm_plugin import get_mm_plugin
from ..data.template import get_template_and_fix_tokenizer
from ..extras.logging import get_logger
from ..model.loader import compute_dtype, load_model, load_processor, load_tokenizer
from ..model.model_utils.hub import resolve_model
from .base import RequestError, RequestSettings, Response, resolve_settings

logger = get_logger(__name__)

USER_SIDE, ASSISTANT_SIDE = ("user", "observation"), ("assistant", "function")


@dataclass
class StreamInfo:
    """Filled in by a stream as it runs, so a caller that only sees text still gets usage and the end reason."""

    prompt_length: int = 0
    response_length: int = 0
    finish_reason: str = "length"


def check_messages(messages: list[dict[str, str]]) -> None:
    """Turns alternate user-side / assistant-side and end on the user side, as the template encodes them."""
    if not messages:
        raise RequestError("`messages` is empty: send at least one user message", "messages")
    for i, message in enumerate(messages):
        expected = USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE
        if not isinstance(message, dict) or message.get("role") not in expected:
            got = message.get("role") if isinstance(message, dict) else type(message).__name__
            raise RequestError(f"message {i} has role `{got}`; turns must alternate user (or tool result) and "
                               "assistant (or tool call), starting and ending with the user", "messages")
        if not isinstance(message.get("content"), str):
            raise RequestError(f"message {i}: `content` must be a string", "messages")


def _tools_text(tools: Any) -> str | None:
    if tools is None or isinstance(tools, str):
        return tools or None
    return json.dumps(tools, ensure_ascii=False)


def _first_stop(text: str, stop: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_length(text: str, stop: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string (held back when streaming)."""
    best = 0
    for word in stop:
        for size in range(min(len(word) - 1, len(text)), best, -1):
            if text.endswith(word[:size]):
                best = size
                break
    return best


class _TokenStreamer:
    """A transformers streamer: drops the prompt, stops at the template's stop ids and emits new text pieces.

    Decoding the whole answer each time (rather than token by token) keeps multi-byte characters intact and
    makes the streamed text equal to the non-streamed one.
    """

    def __init__(self, tokenizer: Any, stop_ids: list[int], skip_special_tokens: bool) -> None:
        self.tokenizer, self.stop_ids, self.skip = tokenizer, set(stop_ids), skip_special_tokens
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.ids: list[int] = []
        self.text = ""
        self.prompt_seen = False
        self.hit_stop = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.hit_stop:
            return
        for token in value.reshape(-1).tolist():
            if token in self.stop_ids:
                self.hit_stop = True
                break
            self.ids.append(token)
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if not final and text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if text.startswith(self.text) and len(text) > len(self.text):
            self.queue.put(text[len(self.text):])
        self.text = text

    def end(self) -> None:
        self._emit(final=True)
        self.queue.put(None)

    def __iter__(self) -> Iterator[str]:
        while (piece := self.queue.get()) is not None:
            yield piece


class HuggingfaceEngine:
    def __init__(self, model_args: Any, data_args: Any, finetuning_args: Any, generating_args: Any) -> None:
        source = resolve_model(model_args)
        self.tokenizer = load_tokenizer(model_args, source)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.processor = load_processor(model_args, self.tokenizer, source)
        self.plugin = get_mm_plugin(self.template.mm_plugin)
        self.media_token_texts = self.plugin.media_token_texts(self.tokenizer) if self.processor is not None else ()
        dtype = compute_dtype(None, finetuning_args, model_args, generation=True)
        # Rule: `stage: rm` in an inference config loads a reward model (its value head is required); any other
        # stage loads a generating model. PPO outputs also carry a value head, so the folder alone cannot decide.
        self.is_reward_model = finetuning_args.stage == "rm"
        self.tokenizer.padding_side = "right" if self.is_reward_model else "left"
        self.model = load_model(self.tokenizer, model_args, finetuning_args, False, dtype, source,
                                add_valuehead=self.is_reward_model)
        if not self.is_reward_model:
            self._hint_reward_adapter(model_args)
        self.generating_args = generating_args
        self.stop_ids = self.template.stop_token_ids(self.tokenizer)
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.context_length: int | None = getattr(text_config, "max_position_embeddings", None)
        self._seed_lock = threading.Lock()

    @staticmethod
    def _hint_reward_adapter(model_args: Any) -> None:
        adapters = [a.strip() for a in (model_args.adapter_name_or_path or "").split(",") if a.strip()]
        if adapters and os.path.isfile(os.path.join(adapters[-1], "value_head.safetensors")):
            logger.warning("%s holds value_head.safetensors: if it is a reward model, set `stage: rm` to score "
                           "with it; it is loaded for generation now.", adapters[-1])

    # ------------------------------------------------------------------------------------ prompts
    def encode_chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None) -> list[int]:
        return self.prepare_chat(messages, system, tools)[0]

    def prepare_chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
                     images: list[Any] | None = None, videos: list[Any] | None = None,
                     audios: list[Any] | None = None) -> tuple[list[int], dict[str, Any]]:
        """Prompt ids, and the media tensors the model's forward takes with them (empty for text)."""
        check_messages(messages)
        media = bool(images or videos or audios)
        try:
            if media or self.plugin.kinds:
                # Placeholders become the model's media tokens; with no media this only checks that the text
                # holds no stray placeholder or typed media token.
                if self.processor is not None:
                    self.plugin.check_typed(messages, (system, _tools_text(tools)), self.media_token_texts)
                messages = self.plugin.expand_messages(messages, images, videos, audios, self.processor)
            prompt = self.template.encode_prompt(self.tokenizer, messages, system, _tools_text(tools))
        except (ValueError, TypeError, KeyError, OSError, ImportError) as err:
            raise RequestError(str(err), "tools" if tools and not media else "messages") from err
        if not media:
            return prompt, {}
        try:
            prompt, _ = self.plugin.expand_ids(prompt, None, images, videos, audios, self.tokenizer, self.processor)
            counts = [(len(images or ()), len(videos or ()), len(audios or ()))]
            extra = self.plugin.mm_inputs(images, videos, audios, self.processor, counts=counts, input_ids=[prompt])
        except (ValueError, TypeError, OSError, ImportError) as err:
            raise RequestError(str(err), "messages") from err
        return prompt, extra

    def encode_text(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("`prompt` must be a non-empty string", "prompt")
        return self.tokenizer.encode(prompt, add_special_tokens=True)

    def parse_tool_calls(self, text: str) -> list[dict[str, Any]]:
        """Calls written in the template's tool format, or [] when the text is a plain answer."""
        calls = self.template.extract_tool_calls(text)
        return calls if isinstance(calls, list) else []

    # ------------------------------------------------------------------------------------ generation
    def _require_generation(self) -> None:
        if self.is_reward_model:
            raise RequestError("this is a reward model (`stage: rm`): it scores texts and cannot generate", "model")

    def _budget(self, prompt_length: int, settings: RequestSettings) -> int:
        """New tokens allowed: an explicit request must fit the context; the configured default is clamped."""
        g = settings.generating
        wanted = g.max_new_tokens if g.max_new_tokens > 0 else max(g.max_length - prompt_length, 1)
        room = None if self.context_length is None else self.context_length - prompt_length
        if room is not None and room <= 0:
            raise RequestError(f"the prompt is {prompt_length} tokens; this model's context is {self.context_length}",
                               "messages")
        if room is not None and wanted > room:
            if settings.explicit_max_new_tokens:
                raise RequestError(f"this model's context is {self.context_length} tokens: {prompt_length} in the "
                                   f"prompt plus {wanted} requested is too many", "max_new_tokens")
            wanted = room
        return wanted

    def _generate_kwargs(self, prompt: list[int], settings: RequestSettings, events: tuple[threading.Event, ...],
                         streamer: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        import torch
        from transformers import StoppingCriteriaList

        input_ids = torch.tensor([prompt], device=self.model.device)
        kwargs = settings.generating.to_dict()
        kwargs.pop("max_length", None)
        kwargs["max_new_tokens"] = self._budget(len(prompt), settings)
        criteria = _StopCriteria(events, len(prompt), self.tokenizer, settings.stop)
        kwargs.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), eos_token_id=self.stop_ids,
                      pad_token_id=self.tokenizer.pad_token_id, num_return_sequences=settings.n,
                      stopping_criteria=StoppingCriteriaList([criteria]))
        if streamer is not None:
            kwargs["streamer"] = streamer
        kwargs.update(self._media_inputs(extra or {}))
        return kwargs

    def _media_inputs(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Media tensors on the model's device; floating ones (pixels, audio features) in the model's dtype."""
        import torch

        dtype = self.model.dtype
        moved = {}
        for key, value in extra.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.model.device, dtype=dtype if value.is_floating_point() else None)
            moved[key] = value
        return moved

    def _run_generate(self, kwargs: dict[str, Any], seed: int | None) -> Any:
        import torch

        with torch.inference_mode():
            if seed is None:
                return self.model.generate(**kwargs)
            from transformers import set_seed

            with self._seed_lock:  # reproducible as long as no unseeded request samples at the same time
                set_seed(seed)
                return self.model.generate(**kwargs)

    def generate(self, prompt: list[int], parse_tools: bool = False, extra: dict[str, Any] | None = None,
                 **overrides: Any) -> list[Response]:
        """`extra`: media tensors from prepare_chat."""
        self._require_generation()
        settings = resolve_settings(self.generating_args, overrides)
        output = self._run_generate(self._generate_kwargs(prompt, settings, (), extra=extra), settings.seed)
        skip = settings.generating.skip_special_tokens
        responses = []
        for row in output[:, len(prompt):].tolist():
            ended = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            ids = row if ended is None else row[:ended]
            text = self.tokenizer.decode(ids, skip_special_tokens=skip)
            cut = _first_stop(text, settings.stop)
            if cut is not None:
                text = text[:cut]
            reason = "stop" if ended is not None or cut is not None else "length"
            calls = self.parse_tool_calls(text) if parse_tools else []
            responses.append(Response(text, len(ids), len(prompt), "tool_calls" if calls else reason, calls))
        return responses

    def stream(self, prompt: list[int], cancel: threading.Event | None = None, info: StreamInfo | None = None,
               extra: dict[str, Any] | None = None, **overrides: Any) -> Iterator[str]:
        """Text pieces as they are generated. Setting `cancel` (or closing this generator) stops generation."""
        self._require_generation()
        settings = resolve_settings(self.generating_args, overrides)
        if settings.n != 1 or settings.generating.num_beams != 1:
            raise RequestError("streaming returns one sampled or greedy answer: set n and num_beams to 1", "n")
        cancel = cancel or threading.Event()
        finished = threading.Event()  # our own stop (a stop string seen, the consumer left), apart from `cancel`
        info = info or StreamInfo()
        info.prompt_length = len(prompt)
        streamer = _TokenStreamer(self.tokenizer, self.stop_ids, settings.generating.skip_special_tokens)
        kwargs = self._generate_kwargs(prompt, settings, (cancel, finished), streamer, extra)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._run_generate(kwargs, settings.seed)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        held, stopped_by_word = "", False
        try:
            for piece in streamer:
                held += piece
                cut = _first_stop(held, settings.stop)
                if cut is not None:
                    held, stopped_by_word = held[:cut], True
                    finished.set()
                    break
                keep = _stop_prefix_length(held, settings.stop)
                if len(held) > keep:
                    yield held[:len(held) - keep]
                    held = held[len(held) - keep:]
            if held:
                yield held
        finally:
            finished.set()  # a consumer that left early stops the generate thread at its next step
            thread.join()
        if failure:
            raise failure[0]
        info.response_length = len(streamer.ids)
        info.finish_reason = "stop" if streamer.hit_stop or stopped_by_word else "length"

    # ------------------------------------------------------------------------------------ chat
    def chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
             images: list[Any] | None = None, videos: list[Any] | None = None, audios: list[Any] | None = None,
             **overrides: Any) -> list[Response]:
        prompt, extra = self.prepare_chat(messages, system, tools, images, videos, audios)
        return self.generate(prompt, parse_tools=bool(tools), extra=extra, **overrides)

    def stream_chat(self, messages: list[dict[str, str]], system: str | None = None, tools: Any = None,
                    cancel: threading.Event | None = None, info: StreamInfo | None = None,
                    images: list[Any] | None = None, videos: list[Any] | None = None, audios: list[Any] | None = None,
                    **overrides: Any) -> Iterator[str]:
        prompt, extra = self.prepare_chat(messages, system, tools, images, videos, audios)
        yield from self.stream(prompt, cancel, info, extra=extra, **overrides)

    # ------------------------------------------------------------------------------------ scoring
    def get_scores(self, texts: list[str], max_length: int | None = None) -> list[float]:
        """One reward per text (prompt and answer as one string, special tokens written out), at its last token."""
        import torch

        if not self.is_reward_model:
            raise RequestError("this model was loaded for generation; scores need a reward model: load a `stage: rm` "
                               "output with `stage: rm` in the config", "model")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise RequestError("`messages` must be a non-empty list of non-empty strings", "messages")
        batch = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        limit = max_length or self.context_length
        if limit is not None and batch["input_ids"].shape[1] > limit:
            raise RequestError(f"a text is {batch['input_ids'].shape[1]} tokens; this model's context is {limit}",
                               "messages")
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            scores = self.model.score(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return [float(s) for s in scores.float().cpu().tolist()]


class _StopCriteria:
    """Stops every row when one of `events` is set (client gone, stop word seen) and each row at a `stop` string."""

    def __init__(self, events: tuple[threading.Event, ...], prompt_length: int, tokenizer: Any,
                 stop: list[str]) -> None:
        self.events, self.prompt_length, self.tokenizer, self.stop = events, prompt_length, tokenizer, stop
        # Decoding a short tail is enough to see a stop string that just appeared (a token is at least a byte).
        self.tail = 2 * max((len(s.encode("utf-8")) for s in stop), default=0) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids.shape[0]
        if any(event.is_set() for event in self.events):
            return torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        done = [False] * rows
        if self.stop:
            for i in range(rows):
                tail = input_ids[i, max(self.prompt_length, input_ids.shape[1] - self.tail):].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=False)
                done[i] = any(s in text for s in self.stop)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
