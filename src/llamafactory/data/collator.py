"""Batching: pad inputs with the pad token and labels with IGNORE_INDEX so padding never adds to the loss.

One collator serves every stage: supervised batches, packed batches (position ids padded as a new
segment; with neat packing the 2-D mask is left out so attention stays inside each example), pairwise
batches (chosen rows, then rejected rows) and KTO batches (target and KL rows, plus tags).

Padding-free batches put the examples of a batch back to back in one row instead of padding them to the
longest: no compute goes to padding. Positions restart at each example, the first label of each example
is ignored (nothing before it in that example predicts it, as in a padded row), and `cu_seq_lens_q/k`
give the example boundaries so attention never crosses them (flash-attention reads them natively; on
other kernels see model/model_utils/varlen_attention.py). The loss is the same as the padded batch's.

Multimodal models (a template whose `mm_plugin` is not `base`, and the model's HF processor: without one, as for
the text-only Gemma 3 models on the `gemma3` template, batches are text batches): the batch's media paths become
the model's tensors through the plugin (pixel_values, image_grid_thw, input_features, ...), Qwen-VL models get their
M-RoPE `position_ids` (3, batch, length), and a batch without any media still gets one tiny dummy image (or silent
audio) whose tokens are masked out (attention 0, labels ignored): every rank then runs the vision/audio tower, which
DDP and ZeRO-3 need (a rank that skips parameters the others use waits forever). Right-padded (training) batches
get the dummy after the first row's tokens; left-padded (generation) ones before them, so every prompt still ends
where generation starts and the masked dummy changes nothing generated. Padding-free is off for them.
"""

from dataclasses import dataclass, field
from typing import Any

from ..extras.constants import IGNORE_INDEX
from ..extras.errors import ConfigError
from ..extras.logging import get_logger

logger = get_logger(__name__)
MEDIA_KEYS = ("images", "videos", "audios")
MROPE_PLUGINS = ("qwen2_vl", "qwen3_vl")  # position ids from the model's get_rope_index


def _rope_index(model: Any) -> Any:
    """The model's `get_rope_index`, wherever wrappers (PEFT, the ForConditionalGeneration head) put it."""
    seen = 0
    while model is not None and seen < 6:
        method = getattr(model, "get_rope_index", None)
        if callable(method):
            return method
        base = getattr(model, "get_base_model", None)
        model = base() if callable(base) else getattr(model, "model", None)
        seen += 1
    return None


class MediaBatcher:
    """Media for one model: the plugin, the HF processor, and (M-RoPE models) the model's rope index."""

    def __init__(self, plugin_name: str, tokenizer: Any, processor: Any, model: Any = None) -> None:
        from .mm_plugin import get_mm_plugin

        self.plugin = get_mm_plugin(plugin_name)
        self.tokenizer, self.processor = tokenizer, processor
        self.rope_index = _rope_index(model) if plugin_name in MROPE_PLUGINS else None
        self._dummy: tuple[tuple[list[Any], list[Any], list[Any]], list[int]] | None = None
        self.dummy_added = False  # whether the batch being built holds the dummy (set by prepare)

    def dummy(self) -> tuple[tuple[list[Any], list[Any], list[Any]], list[int]]:
        """One tiny image (or a second of silence, for audio-only models) and its tokens, built once."""
        if self._dummy is None:
            import numpy as np
            from PIL import Image

            from ..extras.envs import media_placeholders

            marks = media_placeholders()
            if "images" in self.plugin.kinds:
                media: tuple[list[Any], list[Any], list[Any]] = ([Image.new("RGB", (28, 28), "white")], [], [])
                mark = marks["images"]
            else:
                rate = int(getattr(self.processor, "audio_sampling_rate", None) or 16000)
                media, mark = ([], [], [np.zeros(rate, dtype=np.float32)]), marks["audios"]
            text = self.plugin.expand_messages([{"role": "user", "content": mark}], *media, self.processor)
            ids = self.tokenizer.encode(text[0]["content"], add_special_tokens=False)
            ids, _ = self.plugin.expand_ids(ids, None, *media, self.tokenizer, self.processor)
            self._dummy = media, list(ids)
        return self._dummy

    def prepare(self, features: list[dict[str, Any]], padding_side: str
                ) -> tuple[list[dict[str, Any]], tuple[list[Any], list[Any], list[Any]], list[tuple[int, int, int]]]:
        """Features (the first with dummy tokens when the batch has no media), the flat media, per-row counts."""
        from .converter import video_entry

        self.dummy_added = False
        if not any(key in f for f in features for key in MEDIA_KEYS):
            raise ConfigError("a multimodal batch arrived without its images/videos/audios columns: the trainer "
                              "removed them (set `remove_unused_columns: false`), or the dataset was tokenized for "
                              "a text-only template or without the model's processor")
        images: list[Any] = []
        videos: list[Any] = []
        audios: list[Any] = []
        counts = []
        for feature in features:
            row = [feature.get(key) or [] for key in MEDIA_KEYS]
            images += row[0]
            videos += [video_entry(v) if isinstance(v, str) else v for v in row[1]]
            audios += row[2]
            counts.append((len(row[0]), len(row[1]), len(row[2])))
        if images or videos or audios:
            return features, (images, videos, audios), counts
        media, ids = self.dummy()
        first = dict(features[0])
        first_ids = list(first["input_ids"])
        mask = list(first.get("attention_mask", [1] * len(first_ids)))
        if padding_side == "left":  # generation: the labels are reference answers, not aligned, so left as they are
            first["attention_mask"] = [0] * len(ids) + mask
            first["input_ids"] = ids + first_ids
        else:
            first["attention_mask"] = mask + [0] * len(ids)
            first["labels"] = list(first.get("labels", first_ids)) + [IGNORE_INDEX] * len(ids)
            first["input_ids"] = first_ids + ids
        counts[0] = tuple(len(m) for m in media)
        self.dummy_added = True
        return [first, *features[1:]], media, counts

    def tensors(self, batch: dict[str, Any], media: tuple[list[Any], list[Any], list[Any]],
                counts: list[tuple[int, int, int]], padding_side: str = "right") -> dict[str, Any]:
        """The model's media tensors for a padded batch, plus M-RoPE position ids where the model uses them."""
        images, videos, audios = media
        if not (images or videos or audios):
            return {}
        labels = batch.get("labels") if padding_side == "right" else None  # left: references, not aligned
        inputs = self.plugin.mm_inputs(images, videos, audios, self.processor, counts=counts,
                                       input_ids=batch["input_ids"], labels=labels)
        if self.dummy_added and padding_side == "left" and "cross_attention_mask" in inputs:
            # Mllama: the image's span runs to the end of the row, here over the whole prompt; nothing may see it
            inputs["cross_attention_mask"][0] = 0
        # Generation (left padding) leaves them to the model's generate, which tracks them across decoding steps.
        if self.rope_index is not None and "mm_token_type_ids" in inputs and padding_side == "right":
            extra = {k: inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in inputs}
            position_ids, _ = self.rope_index(batch["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                              attention_mask=batch.get("attention_mask"), **extra)
            inputs["position_ids"] = position_ids
        return inputs


@dataclass
class DataCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = 8
    neat_packing: bool = False
    padding_side: str = "right"  # left for batched generation, so every prompt ends where generation starts
    padding_free: bool = False  # one row per batch, examples back to back (supervised batches only)
    media: MediaBatcher | None = field(default=None, repr=False)  # multimodal models only

    def _pad(self, rows: list[dict[str, list[int]]], prefix: str = "") -> dict[str, Any]:
        import torch

        longest = max(len(r[f"{prefix}input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        label_longest = max(1, max(len(r.get(f"{prefix}labels", r[f"{prefix}input_ids"])) for r in rows))
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        with_positions = f"{prefix}position_ids" in rows[0]
        if with_positions:
            batch["position_ids"] = []
        for row in rows:
            ids = row[f"{prefix}input_ids"]
            gap = longest - len(ids)
            mask = row.get(f"{prefix}attention_mask", [1] * len(ids))
            labels = row.get(f"{prefix}labels", ids)
            if self.padding_side == "left":  # generation: labels are references of their own lengths
                batch["input_ids"].append([self.pad_token_id] * gap + ids)
                batch["attention_mask"].append([0] * gap + mask)
                batch["labels"].append(labels + [IGNORE_INDEX] * (label_longest - len(labels)))
                continue
            batch["input_ids"].append(ids + [self.pad_token_id] * gap)
            batch["attention_mask"].append(mask + [0] * gap)
            batch["labels"].append(labels + [IGNORE_INDEX] * gap)
            if with_positions:  # padding counts as one more segment, whose positions start again at 0
                batch["position_ids"].append(row[f"{prefix}position_ids"] + list(range(gap)))
        tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        if self.neat_packing:
            tensors.pop("attention_mask")
        return tensors

    def _concatenate(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        """One row holding every example; a packed row's own segments (neat packing) stay segments."""
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        starts: list[int] = []
        for row in rows:
            row_ids = row["input_ids"]
            row_positions = row.get("position_ids") or list(range(len(row_ids)))
            row_labels = list(row.get("labels", row_ids))
            for i, position in enumerate(row_positions):
                if position == 0 or i == 0:
                    starts.append(len(ids) + i)
                    row_labels[i] = IGNORE_INDEX
            ids += row_ids
            labels += row_labels
            positions += row_positions
        multiple = self.pad_to_multiple_of or 1
        gap = -len(ids) % multiple  # a few pad tokens as one more, ignored example: fewer distinct shapes to allocate
        if gap:
            starts.append(len(ids))
            ids += [self.pad_token_id] * gap
            labels += [IGNORE_INDEX] * gap
            positions += range(gap)
        bounds = [*starts, len(ids)]
        longest = max(end - start for start, end in zip(bounds[:-1], bounds[1:]))
        cu_seq_lens = torch.tensor(bounds, dtype=torch.int32)
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest, "max_length_k": longest,
        }

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        first = features[0]
        if "chosen_input_ids" in first:
            batch = self._pad([{k[len("chosen_"):]: v for k, v in f.items() if k.startswith("chosen_")}
                               for f in features] + [{k[len("rejected_"):]: v for k, v in f.items()
                                                      if k.startswith("rejected_")} for f in features])
            if "ref_chosen_logps" in first:  # precomputed reference log-probabilities, in the same row order
                batch["ref_logps"] = torch.tensor([f["ref_chosen_logps"] for f in features]
                                                  + [f["ref_rejected_logps"] for f in features])
            return batch
        if self.media is not None and "kl_input_ids" not in first:
            features, media, counts = self.media.prepare(features, self.padding_side)
            batch = self._pad(features)
            batch.update(self.media.tensors(batch, media, counts, self.padding_side))
            return batch
        if self.padding_free and "kl_input_ids" not in first and self.padding_side == "right":
            return self._concatenate(features)
        batch = self._pad(features)
        if "kl_input_ids" in first:
            batch.update({f"kl_{k}": v for k, v in self._pad(features, "kl_").items()})
            batch["kto_tags"] = torch.tensor([bool(f["kto_tags"]) for f in features])
            for key in ("ref_logps", "ref_kl_logps"):
                if key in first:
                    batch[key] = torch.tensor([f[key] for f in features])
        return batch


def build_collator(tokenizer: Any, model: Any = None, pad_to_multiple_of: int | None = 8,
                   neat_packing: bool = False, padding_side: str = "right",
                   padding_free: bool = False, template: Any = None, processor: Any = None) -> DataCollator:
    """The batch builder; with a multimodal `template` and the model's HF `processor`, batches carry media
    tensors, and `model` supplies Qwen-VL's M-RoPE position ids. Without a processor (a text-only model, e.g.
    Gemma 3 1B on the `gemma3` template) the template's plugin is inactive: plain text batches."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    plugin = getattr(template, "mm_plugin", None) or "base"
    media = None
    if plugin != "base" and processor is not None:
        media = MediaBatcher(plugin, tokenizer, processor, model)
        if padding_free:
            logger.info("Padding-free batches are off for multimodal models: media tensors follow padded rows.")
            padding_free = False
    return DataCollator(pad, pad_to_multiple_of, neat_packing, padding_side, padding_free, media)
