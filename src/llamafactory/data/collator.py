"""Batching: pad inputs with the pad token and labels with IGNORE_INDEX so padding never adds to the loss.

One collator serves every stage: supervised batches, packed batches (position ids padded as a new
segment; with neat packing the 2-D mask is left out so attention stays inside each example), pairwise
batches (chosen rows, then rejected rows) and KTO batches (target and KL rows, plus tags).

Padding-free batches put the examples of a batch back to back in one row instead of padding them to the
longest: no compute goes to padding. Positions restart at each example, the first label of each example
is ignored (nothing before it in that example predicts it, as in a padded row), and `cu_seq_lens_q/k`
give the example boundaries so attention never crosses them (flash-attention reads them natively; on
other kernels see model/model_utils/varlen_attention.py). The loss is the same as the padded batch's.
"""

from dataclasses import dataclass
from typing import Any

from ..extras.constants import IGNORE_INDEX


@dataclass
class DataCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = 8
    neat_packing: bool = False
    padding_side: str = "right"  # left for batched generation, so every prompt ends where generation starts
    padding_free: bool = False  # one row per batch, examples back to back (supervised batches only)

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
                   padding_free: bool = False) -> DataCollator:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollator(pad, pad_to_multiple_of, neat_packing, padding_side, padding_free)
