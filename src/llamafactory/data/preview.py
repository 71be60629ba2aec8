"""`lmf data preview` and `lmf data stats`: see exactly what training will see, before training.

These functions only render; train/tuner.py:run_data loads the tokenizer and the data for them."""

import sys
from typing import Any

import numpy as np

from ..extras.constants import IGNORE_INDEX

DIM, RESET = "\x1b[2m", "\x1b[0m"
OPEN, CLOSE = "⟦", "⟧"  # marks trained text when the output is not a terminal


def _spans(input_ids: list[int], labels: list[int]) -> list[tuple[bool, list[int]]]:
    """Runs of consecutive tokens that share trained/untrained status."""
    spans: list[tuple[bool, list[int]]] = []
    for token, label in zip(input_ids, labels):
        trained = label != IGNORE_INDEX
        if spans and spans[-1][0] == trained:
            spans[-1][1].append(token)
        else:
            spans.append((trained, [token]))
    return spans


def render_example(tokenizer: Any, input_ids: list[int], labels: list[int], color: bool) -> str:
    parts = []
    for trained, tokens in _spans(input_ids, labels):
        text = tokenizer.decode(tokens)
        if color:
            parts.append(text if trained else f"{DIM}{text}{RESET}")
        else:
            parts.append(f"{OPEN}{text}{CLOSE}" if trained else text)
    ids = " ".join(f"{t}*" if label != IGNORE_INDEX else str(t) for t, label in zip(input_ids, labels))
    return "".join(parts) + f"\n  ids (* = trained): {ids}"


def preview(dataset: Any, tokenizer: Any, stage: str, count: int = 3) -> None:
    color = sys.stdout.isatty()
    legend = "dimmed text is masked" if color else f"text inside {OPEN} {CLOSE} is trained on, the rest is masked"
    print(f"First {min(count, len(dataset))} of {len(dataset)} training examples (stage {stage}; {legend}):")
    for i in range(min(count, len(dataset))):
        row = dataset[i]
        prefixes = ["chosen_", "rejected_"] if "chosen_input_ids" in row else [""]
        for prefix in prefixes:
            ids, labels = row[f"{prefix}input_ids"], row.get(f"{prefix}labels", row[f"{prefix}input_ids"])
            trained = sum(label != IGNORE_INDEX for label in labels)
            title = f"example {i + 1}{' ' + prefix.rstrip('_') if prefix else ''}"
            print(f"\n--- {title}: {len(ids)} tokens, {trained} trained ---")
            print(render_example(tokenizer, ids, labels, color))


def padding_waste(lengths: list[int], batch_size: int, multiple: int = 8, seed: int = 42) -> float:
    """Share of padded positions when batches are drawn in random order, as the trainer does."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        width = -(-max(batch) // multiple) * multiple
        padded += width * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0


def token_counts(dataset: Any, key: str) -> Any:
    """Length of every row's `key` list, read from the Arrow column (no Python objects per token)."""
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[key]  # honours any selection or shuffle of the rows
    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def trained_tokens(dataset: Any, label_key: str) -> int:
    import pyarrow.compute as pc

    labels = pc.list_flatten(dataset.with_format("arrow")[label_key])
    return int(pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0)


def stats(dataset: Any, report: dict[str, Any], data_args: Any, training_args: Any, stage: str) -> None:
    key = "chosen_input_ids" if "chosen_input_ids" in dataset.column_names else "input_ids"
    label_key = key.replace("input_ids", "labels")
    lengths = token_counts(dataset, key).tolist()
    trained = trained_tokens(dataset, label_key)
    print(f"Stage {stage}, template {getattr(data_args, 'template', None) or 'from the tokenizer'}, "
          f"cutoff_len {data_args.cutoff_len}")
    for name, entry in report.items():
        dropped = sum(entry["dropped"].values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in entry["dropped"].items()) or "none"
        print(f"  dataset {name}: {entry['rows']} rows loaded, {dropped} dropped ({reasons})")
    print(f"Examples after processing: {len(dataset)}")
    at_cutoff = sum(n >= data_args.cutoff_len for n in lengths)
    print(f"Examples that reach cutoff_len (truncated or packed full): {at_cutoff} ({at_cutoff / len(lengths):.1%})")
    p = np.percentile(lengths, [50, 90, 99, 100])
    print(f"Tokens per example: mean {np.mean(lengths):.1f}, p50 {p[0]:.0f}, p90 {p[1]:.0f}, p99 {p[2]:.0f}, "
          f"max {p[3]:.0f}")
    print(f"Trainable (unmasked) tokens: {trained:,} of {sum(lengths):,} ({trained / max(sum(lengths), 1):.1%})")
    batch = training_args.per_device_train_batch_size
    print(f"Estimated padding at batch size {batch}: {padding_waste(lengths, batch, seed=training_args.seed):.1%} "
          "of computed positions")
