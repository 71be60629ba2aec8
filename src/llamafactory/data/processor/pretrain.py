"""Pre-training text: each example's text plus eos, concatenated and cut into cutoff_len blocks.

Packing is the default for pt (`packing` unset or true); with `packing: false` each text stays its own
example, cut at cutoff_len."""

from itertools import chain
from typing import Any

from .media import refuse_media


class PretrainProcessor:
    def __init__(self, template: Any, tokenizer: Any, data_args: Any, processor: Any = None) -> None:
        self.tokenizer = tokenizer
        self.data_args = data_args

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return bool(prompt) and bool(prompt[0]["content"])

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        refuse_media(examples, "pt")
        tok = self.tokenizer
        texts = [p[0]["content"] + tok.eos_token for p in examples["_prompt"] if p and p[0]["content"]]
        encoded = tok(texts, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
            encoded = [[tok.bos_token_id] + ids for ids in encoded]
        block = self.data_args.cutoff_len
        if self.data_args.packing is False:
            blocks = [ids[:block] for ids in encoded]
            return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks],
                    "labels": [list(b) for b in blocks]}
        stream = list(chain.from_iterable(encoded))
        # The last block of each batch may be short; it is padded, never dropped.
        blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks],
                "labels": [list(b) for b in blocks]}

    def describe(self, example: dict[str, list[int]]) -> str:
        return f"input_ids:\n{example['input_ids']}\ninputs:\n{self.tokenizer.decode(example['input_ids'])}"
