"""Feedback examples (kto): an answer tagged desirable or not, plus a mismatched pair for the KL term."""

from typing import Any

from ..formatter import prefetched
from ..template import batch_texts
from .media import refuse_media
from .supervised import SupervisedProcessor


class FeedbackProcessor(SupervisedProcessor):
    """KTO: one answer with a desirable/undesirable tag, plus a mismatched pair for the KL estimate."""

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        refuse_media(examples, "kto")
        keys = ("input_ids", "attention_mask", "labels", "kl_input_ids", "kl_attention_mask", "kl_labels", "kto_tags")
        out: dict[str, list[Any]] = {key: [] for key in keys}
        rows = [r for r in zip(examples["_prompt"], examples["_response"], examples["_system"], examples["_tools"],
                               examples["_kto_tag"]) if self.is_valid(r[0], r[1]) and r[4] is not None]
        conversations = [(row[0] + answer, row[2], row[3]) for i, row in enumerate(rows)
                         for answer in (row[1], rows[(i + 1) % len(rows)][1])]
        with prefetched(self.tokenizer, batch_texts(self.template, conversations)):
            return self._encode_rows(rows, out)

    def _encode_rows(self, rows: list[tuple[Any, ...]], out: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for i, (prompt, response, system, tools, tag) in enumerate(rows):
            # The KL pair: this prompt with the next row's answer (an answer to a different question).
            other = rows[(i + 1) % len(rows)][1]
            input_ids, labels = self.encode(prompt, response, system, tools)
            kl_ids, kl_labels = self.encode(prompt, other, system, tools)
            out["input_ids"].append(input_ids)
            out["attention_mask"].append([1] * len(input_ids))
            out["labels"].append(labels)
            out["kl_input_ids"].append(kl_ids)
            out["kl_attention_mask"].append([1] * len(kl_ids))
            out["kl_labels"].append(kl_labels)
            out["kto_tags"].append(bool(tag))
        return out
