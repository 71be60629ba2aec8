"""Pairwise examples (rm, dpo): one prompt and two answers, truncated together so both stay comparable."""

from typing import Any

from ...extras.constants import IGNORE_INDEX
from ..formatter import prefetched
from ..template import batch_texts
from .media import refuse_media
from .supervised import split_budget


class PairwiseProcessor:
    def __init__(self, template: Any, tokenizer: Any, data_args: Any, processor: Any = None) -> None:
        self.template, self.tokenizer, self.data_args = template, tokenizer, data_args

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return len(prompt) % 2 == 1 and len(response) == 2

    def encode(self, prompt: list[dict[str, str]], response: list[dict[str, str]], system: str | None,
               tools: str | None = None) -> dict[str, list[int]]:
        chosen = self.template.encode_multiturn(self.tokenizer, prompt + response[:1], system or None, tools or None)
        rejected = self.template.encode_multiturn(self.tokenizer, prompt + response[1:], system or None, tools or None)
        prompt_ids = [t for source, target in chosen[:-1] for t in source + target] + chosen[-1][0]
        chosen_ids, rejected_ids = chosen[-1][1], rejected[-1][1]
        if self.template.efficient_eos:
            chosen_ids, rejected_ids = chosen_ids + [self.tokenizer.eos_token_id], rejected_ids + [
                self.tokenizer.eos_token_id]
        # The longer answer decides the budget, so both answers get the same prompt.
        prompt_len, answer_len = split_budget(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)),
                                              self.data_args.cutoff_len)
        prompt_ids = prompt_ids[:prompt_len]
        out: dict[str, list[int]] = {}
        for key, answer in (("chosen", chosen_ids[:answer_len]), ("rejected", rejected_ids[:answer_len])):
            masked = prompt_ids if self.data_args.train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
            out[f"{key}_input_ids"] = prompt_ids + answer
            out[f"{key}_attention_mask"] = [1] * (len(prompt_ids) + len(answer))
            out[f"{key}_labels"] = masked + answer
        return out

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        refuse_media(examples, "rm/dpo")
        keys = [f"{k}_{part}" for k in ("chosen", "rejected") for part in ("input_ids", "attention_mask", "labels")]
        out: dict[str, list[Any]] = {key: [] for key in keys}
        rows = [row for row in zip(examples["_prompt"], examples["_response"], examples["_system"], examples["_tools"])
                if self.is_valid(row[0], row[1])]
        conversations = [(prompt + [answer], system, tools) for prompt, response, system, tools in rows
                         for answer in response]
        with prefetched(self.tokenizer, batch_texts(self.template, conversations)):
            for prompt, response, system, tools in rows:
                for key, value in self.encode(prompt, response, system, tools).items():
                    out[key].append(value)
        return out

    def describe(self, example: dict[str, list[int]]) -> str:
        tok = self.tokenizer
        return (f"chosen:\n{tok.decode(example['chosen_input_ids'])}\n"
                f"rejected:\n{tok.decode(example['rejected_input_ids'])}")
