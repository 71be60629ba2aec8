"""Batching: pad inputs with the pad token and labels with IGNORE_INDEX so padding never adds to the loss."""

from typing import Any

from ..extras.constants import IGNORE_INDEX


def build_collator(tokenizer: Any, model: Any = None, pad_to_multiple_of: int | None = None) -> Any:
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(
        tokenizer=tokenizer,
        model=model,
        label_pad_token_id=IGNORE_INDEX,
        pad_to_multiple_of=pad_to_multiple_of,
    )
