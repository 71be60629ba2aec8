"""Media in the processors: the template's mm plugin turns each placeholder into the model's own media tokens.

The plugin is active only with the model's HF processor: a multimodal template (gemma3 also serves the text-only
Gemma 3 models) without one, like a text-only template (mm plugin `base`), keeps the text path exactly as it was
and refuses rows with media. An active plugin makes every example carry `images` / `videos` / `audios` (the stored
path strings, read by the collator) and a `_media_cut` flag: truncation must never keep part of an image's tokens
(nor only the media, without an answer), so the loader drops flagged examples and says how many. Errors raised
while reading a row's media name its dataset and row (the converter's `_origin` column).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ...extras.constants import IGNORE_INDEX
from ...extras.errors import ConfigError, NotBuiltError
from ...extras.logging import get_logger
from ..converter import MEDIA_COLUMNS, MEDIA_ORIGIN, video_entry

logger = get_logger(__name__)

MEDIA_CUT = "_media_cut"
MEDIA_OUTPUT = ("images", "videos", "audios")  # tokenized columns, aligned with MEDIA_COLUMNS

Media = tuple[list[str], list[str], list[str]]


def has_media(examples: dict[str, list[Any]]) -> bool:
    """Whether any row of a batch carries media (cheap: media-free datasets have no media columns at all)."""
    return any(any(examples[column]) for column in MEDIA_COLUMNS if column in examples)


def refuse_media(examples: dict[str, list[Any]], stage: str) -> None:
    """Stages whose trainers feed the model text only: media would be silently ignored, so they are refused."""
    if has_media(examples):
        raise NotBuiltError(f"stage `{stage}` does not train on images, videos or audios yet (its trainer passes "
                            "text only); use a text-only dataset, or stage sft for multimodal data")


class MediaRows:
    """The template's mm plugin, the model's HF processor and the media token ids, for one processor."""

    def __init__(self, template: Any, tokenizer: Any, processor: Any = None) -> None:
        self.name = getattr(template, "mm_plugin", None) or "base"
        self.template_name = getattr(template, "name", "tokenizer")
        self.enabled = self.name != "base" and processor is not None  # a text-only model has no processor
        self.tokenizer, self.processor = tokenizer, processor
        self.plugin: Any = None
        self.token_ids: frozenset[int] = frozenset()
        self.warned_skip = False
        if self.enabled:
            from ..mm_plugin import get_mm_plugin

            self.plugin = get_mm_plugin(self.name)
            self.token_ids = frozenset(self.plugin.media_token_ids(tokenizer))
            self.token_texts = self.plugin.media_token_texts(tokenizer)

    def refuse(self, examples: dict[str, list[Any]]) -> None:
        """The text path: media in the data would be read as plain text, so say where and what to do instead."""
        if not has_media(examples):
            return
        index = next(i for i in range(len(examples["_prompt"])) if any(self.row(examples, i)))
        where = self.origin(examples, index)
        if self.name != "base":
            raise ConfigError(f"{where}: this row holds images, videos or audios, but this model has no processor "
                              f"(it is text-only; template `{self.template_name}` serves text-only models too): "
                              "media need a vision/audio model, whose folder has the processor files "
                              "(preprocessor_config.json)")
        raise ConfigError(f"{where}: template `{self.template_name}` is text-only but the data holds images, videos or "
                          "audios: set `template` to the model's multimodal template (e.g. llava, qwen2_vl, qwen3_vl, "
                          "gemma3, paligemma, mllama, qwen2_audio)")

    def origin(self, examples: dict[str, list[Any]], index: int) -> str:
        """Where a row comes from ("dataset `x` (file), row N"), with its media files."""
        origin = examples[MEDIA_ORIGIN][index] if MEDIA_ORIGIN in examples else ""
        named = [f"{kind} {', '.join(map(str, items))}" for kind, items in zip(MEDIA_OUTPUT, self.row(examples, index))
                 if items]
        return f"{origin or 'an example'} ({'; '.join(named)})" if named else (origin or "an example")

    @contextmanager
    def reading(self, examples: dict[str, list[Any]], index: int) -> Iterator[None]:
        """Errors while expanding a row's media (an unreadable file, a kind the model does not take, a processor
        that refuses it) become ConfigErrors that name the row's dataset, row and media."""
        try:
            yield
        except ConfigError as err:
            raise ConfigError(f"{self.origin(examples, index)}: {err}") from err
        except (ValueError, OSError, ImportError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise ConfigError(f"{self.origin(examples, index)}: cannot turn its media into model inputs with "
                              f"template `{self.template_name}`: {type(err).__name__}: {err}") from err

    def skip_cut(self, cutoff_len: int) -> None:
        """A streamed example that cutoff_len would cut inside its media is skipped; say so once."""
        if not self.warned_skip:
            self.warned_skip = True
            logger.warning("Skipping streamed examples whose image/video/audio tokens cutoff_len (%d) would cut (or "
                           "that keep no answer after them); a stream cannot be counted without reading it all, so "
                           "how many are skipped is not reported. Raise cutoff_len or lower image_max_pixels / "
                           "video_maxlen to keep them.", cutoff_len)

    @staticmethod
    def row(examples: dict[str, list[Any]], index: int) -> Media:
        """The stored media of one row ([] where the dataset has none of a kind)."""
        images, videos, audios = ((examples[c][index] or []) if c in examples else [] for c in MEDIA_COLUMNS)
        return list(images), list(videos), list(audios)

    @staticmethod
    def plugin_media(media: Media) -> tuple[list[str], list[Any], list[str]]:
        """Media as the plugin takes it: a video stored as its frame list becomes that list again."""
        images, videos, audios = media
        return images, [video_entry(v) for v in videos], audios

    def expand(self, messages: list[dict[str, str]], media: Media,
               others: tuple[str | None, ...] = ()) -> list[dict[str, str]]:
        """Check placeholders against media (and `others`, the system prompt and tools text, for stray media
        tokens), then replace each placeholder by the model's tokens for that media."""
        images, videos, audios = self.plugin_media(media)
        try:
            self.plugin.check_typed(messages, others, self.token_texts)
            self.plugin.check(messages, images, videos, audios)
        except ValueError as err:
            raise ConfigError(f"template `{self.template_name}`: {err}") from err
        if not (images or videos or audios):
            return messages
        return self.plugin.expand_messages(messages, images, videos, audios, self.processor)

    def expand_ids(self, input_ids: list[int], labels: list[int], media: Media) -> tuple[list[int], list[int]]:
        """Tokens some families add outside the text (paligemma's image prefix)."""
        images, videos, audios = self.plugin_media(media)
        if not (images or videos or audios):
            return input_ids, labels
        return self.plugin.expand_ids(input_ids, labels, images, videos, audios, self.tokenizer, self.processor)

    def count(self, ids: list[int]) -> int:
        """How many media tokens `ids` hold."""
        token_ids = self.token_ids
        return sum(1 for t in ids if t in token_ids)

    def mask(self, input_ids: list[int], labels: list[int]) -> list[int]:
        """Labels with every media token ignored: the model is never trained to predict image tokens."""
        token_ids = self.token_ids
        return [IGNORE_INDEX if t in token_ids else label for t, label in zip(input_ids, labels)]

    @staticmethod
    def new_output(keys: tuple[str, ...]) -> dict[str, list[Any]]:
        return {key: [] for key in (*keys, *MEDIA_OUTPUT, MEDIA_CUT)}

    def append(self, out: dict[str, list[Any]], input_ids: list[int], labels: list[int], media: Media, cut: bool,
               data_args: Any) -> None:
        """One example into the batch output; a streamed example that cutoff_len cut inside its media is skipped
        (and said once: a stream cannot be counted up front), others carry the `_media_cut` flag to the loader."""
        if cut and data_args.streaming:
            self.skip_cut(data_args.cutoff_len)
            return
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
        for key, items in zip(MEDIA_OUTPUT, media):
            out[key].append(items)
        out[MEDIA_CUT].append(cut)

    @staticmethod
    def finish(out: dict[str, list[Any]], streaming: bool) -> dict[str, list[Any]]:
        """The batch output; streamed ones have no cut rows left for the loader to count."""
        if streaming:
            del out[MEDIA_CUT]
        return out
