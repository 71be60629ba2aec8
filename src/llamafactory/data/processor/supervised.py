"""Supervised examples: prompt tokens masked with IGNORE_INDEX, answers trained, truncated to cutoff_len."""

from typing import Any

from ...extras.constants import IGNORE_INDEX
from ..template import ASSISTANT, FUNCTION


def split_budget(prompt_len: int, response_len: int, budget: int) -> tuple[int, int]:
    """How many prompt and response tokens of one turn fit into `budget`.

    When both cannot fit, the response keeps at least half the budget (or all it needs, if less), so a
    long prompt never crowds out the answer the model is trained to give.
    """
    if prompt_len + response_len <= budget:
        return prompt_len, response_len
    response_keep = min(response_len, max(budget - prompt_len, budget // 2))
    prompt_keep = min(prompt_len, budget - response_keep)
    return prompt_keep, response_keep


class SupervisedProcessor:
    def __init__(self, template: Any, tokenizer: Any, data_args: Any) -> None:
        self.template = template
        self.tokenizer = tokenizer
        self.data_args = data_args

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return (len(prompt) % 2 == 1 and len(response) == 1 and response[0]["role"] in (ASSISTANT, FUNCTION)
                and bool(prompt[-1]["content"]))

    def encode(self, prompt: list[dict[str, str]], response: list[dict[str, str]],
               system: str | None) -> tuple[list[int], list[int]]:
        turns = self.template.encode_multiturn(self.tokenizer, prompt + response, system or None)
        cutoff = self.data_args.cutoff_len
        input_ids: list[int] = []
        labels: list[int] = []
        last = len(turns) - 1
        for i, (source, target) in enumerate(turns):
            budget = cutoff - len(input_ids)
            if budget <= 0:
                break
            source_len, target_len = split_budget(len(source), len(target), budget)
            source, target = source[:source_len], target[:target_len]
            train_this_turn = not self.data_args.mask_history or i == last
            source_labels = source if self.data_args.train_on_prompt else [IGNORE_INDEX] * len(source)
            target_labels = target if train_this_turn else [IGNORE_INDEX] * len(target)
            input_ids += source + target
            labels += source_labels + target_labels
        return input_ids, labels

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for prompt, response, system in zip(examples["_prompt"], examples["_response"], examples["_system"]):
            if not self.is_valid(prompt, response):
                continue  # counted by the loader, which reports how many rows were dropped
            input_ids, labels = self.encode(prompt, response, system)
            out["input_ids"].append(input_ids)
            out["attention_mask"].append([1] * len(input_ids))
            out["labels"].append(labels)
        return out

    def describe(self, example: dict[str, list[int]]) -> str:
        tok = self.tokenizer
        labels = [t for t in example["labels"] if t != IGNORE_INDEX]
        return (f"input_ids:\n{example['input_ids']}\ninputs:\n{tok.decode(example['input_ids'])}\n"
                f"label_ids:\n{example['labels']}\nlabels:\n{tok.decode(labels)}")
