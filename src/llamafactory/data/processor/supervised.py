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

    def encode(self, prompt: list[dict[str, str]], response: list[dict[str, str]], system: str | None,
               tools: str | None = None) -> tuple[list[int], list[int]]:
        turns = self.template.encode_multiturn(self.tokenizer, prompt + response, system or None, tools or None)
        if self.template.efficient_eos and turns:  # one eos closes the whole example
            source, target = turns[-1]
            turns[-1] = (source, target + [self.tokenizer.eos_token_id])
        mask_history = self.data_args.mask_history
        # With mask_history only the last turn is trained, so it gets the budget first (turns are then
        # placed back in order); otherwise turns fill the budget from the start.
        order = list(reversed(range(len(turns)))) if mask_history else list(range(len(turns)))
        pieces: dict[int, tuple[list[int], list[int]]] = {}
        used = 0
        for i in order:
            budget = self.data_args.cutoff_len - used
            if budget <= 0:
                break
            source, target = turns[i]
            source_len, target_len = split_budget(len(source), len(target), budget)
            source, target = source[:source_len], target[:target_len]
            train_this_turn = not mask_history or i == len(turns) - 1
            source_labels = source if self.data_args.train_on_prompt else [IGNORE_INDEX] * len(source)
            target_labels = target if train_this_turn else [IGNORE_INDEX] * len(target)
            pieces[i] = (source + target, source_labels + target_labels)
            used += source_len + target_len
        input_ids = [t for i in sorted(pieces) for t in pieces[i][0]]
        labels = [t for i in sorted(pieces) for t in pieces[i][1]]
        return input_ids, labels

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for prompt, response, system, tools in zip(examples["_prompt"], examples["_response"], examples["_system"],
                                                   examples["_tools"]):
            if not self.is_valid(prompt, response):
                continue  # counted by the loader, which reports how many rows were dropped
            input_ids, labels = self.encode(prompt, response, system, tools)
            out["input_ids"].append(input_ids)
            out["attention_mask"].append([1] * len(input_ids))
            out["labels"].append(labels)
        return out

    def describe(self, example: dict[str, list[int]]) -> str:
        tok = self.tokenizer
        labels = [t for t in example["labels"] if t != IGNORE_INDEX]
        return (f"input_ids:\n{example['input_ids']}\ninputs:\n{tok.decode(example['input_ids'])}\n"
                f"label_ids:\n{example['labels']}\nlabels:\n{tok.decode(labels)}")
