"""Packed supervised examples: several examples share one cutoff_len row, so little compute goes to padding.

With `neat_packing`, each example keeps to itself: its positions restart at 0, and the collator leaves out the
2-D attention mask, so transformers reads the example boundaries from the position ids and attends only
within each example (block-diagonal), under eager, sdpa and flash attention alike.
"""

from typing import Any

from .supervised import SupervisedProcessor


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group example indices into bins of at most `capacity` tokens, longest examples first."""
    bins: list[list[int]] = []
    space: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(space):
            if lengths[index] <= free:
                bins[b].append(index)
                space[b] -= lengths[index]
                break
        else:
            bins.append([index])
            space.append(capacity - lengths[index])
    return bins


class PackedSupervisedProcessor(SupervisedProcessor):
    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        single = super().preprocess(examples)
        neat = self.data_args.neat_packing
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
        lengths = [len(ids) for ids in single["input_ids"]]
        for group in first_fit_decreasing(lengths, self.data_args.cutoff_len):
            input_ids, labels, positions = [], [], []
            for index in sorted(group):
                input_ids += single["input_ids"][index]
                labels += single["labels"][index]
                start = 0 if neat else len(positions)
                positions += range(start, start + lengths[index])
            out["input_ids"].append(input_ids)
            out["labels"].append(labels)
            out["attention_mask"].append([1] * len(input_ids))
            out["position_ids"].append(positions)
        return out
