"""Supervised examples: prompt tokens masked with IGNORE_INDEX, answers trained, truncated to cutoff_len.

With a multimodal template, placeholders become the model's media tokens first (see media.py); those tokens are
never trained and never cut: an example that cutoff_len would cut inside them, or that keeps no answer token next to
them (PaliGemma's image prefix can take the whole budget), is flagged for the loader to drop.
"""

from typing import Any

from ...extras.constants import IGNORE_INDEX
from ..formatter import prefetched
from ..template import ASSISTANT, FUNCTION, batch_texts
from .media import MediaRows


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
    def __init__(self, template: Any, tokenizer: Any, data_args: Any, processor: Any = None) -> None:
        self.template = template
        self.tokenizer = tokenizer
        self.data_args = data_args
        self.media = MediaRows(template, tokenizer, processor)

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return (len(prompt) % 2 == 1 and len(response) == 1 and response[0]["role"] in (ASSISTANT, FUNCTION)
                and bool(prompt[-1]["content"]))

    def encode(self, prompt: list[dict[str, str]], response: list[dict[str, str]], system: str | None,
               tools: str | None = None) -> tuple[list[int], list[int]]:
        return self.fit(self.turns(prompt + response, system, tools), self.data_args.cutoff_len)

    def turns(self, messages: list[dict[str, str]], system: str | None,
              tools: str | None = None) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, answer ids) per turn, untruncated."""
        turns = self.template.encode_multiturn(self.tokenizer, messages, system or None, tools or None)
        if self.template.efficient_eos and turns:  # one eos closes the whole example
            source, target = turns[-1]
            turns[-1] = (source, target + [self.tokenizer.eos_token_id])
        return turns

    def fit(self, turns: list[tuple[list[int], list[int]]], cutoff_len: int) -> tuple[list[int], list[int]]:
        """The turns truncated to `cutoff_len` tokens, with their labels."""
        input_ids, labels, _ = self.fit_counted(turns, cutoff_len)
        return input_ids, labels

    def fit_counted(self, turns: list[tuple[list[int], list[int]]], cutoff_len: int
                    ) -> tuple[list[int], list[int], int]:
        """`fit`, plus how many answer tokens of the trained turns were kept."""
        mask_history = self.data_args.mask_history
        # With mask_history only the last turn is trained, so it gets the budget first (turns are then
        # placed back in order); otherwise turns fill the budget from the start.
        order = list(reversed(range(len(turns)))) if mask_history else list(range(len(turns)))
        pieces: dict[int, tuple[list[int], list[int]]] = {}
        used = answers = 0
        for i in order:
            budget = cutoff_len - used
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
            answers += target_len if train_this_turn else 0
        input_ids = [t for i in sorted(pieces) for t in pieces[i][0]]
        labels = [t for i in sorted(pieces) for t in pieces[i][1]]
        return input_ids, labels, answers

    def encode_media(self, messages: list[dict[str, str]], system: str | None, tools: str | None,
                     media: Any) -> tuple[list[int], list[int], bool]:
        """Ids and labels of a conversation whose placeholders are expanded, and whether it must be dropped:
        cutoff_len cut its media, or left no answer token beside them."""
        turns = self.turns(messages, system, tools)
        total = sum(self.media.count(source) + self.media.count(target) for source, target in turns)
        cutoff = self.data_args.cutoff_len
        input_ids, labels, answers = self.fit_counted(turns, cutoff)
        expanded_ids, expanded_labels = self.media.expand_ids(input_ids, labels, media)
        extra = len(expanded_ids) - len(input_ids)  # tokens the family adds outside the text (paligemma)
        if extra and len(expanded_ids) > cutoff:
            input_ids, labels, answers = self.fit_counted(turns, max(cutoff - extra, 0))
            expanded_ids, expanded_labels = self.media.expand_ids(input_ids, labels, media)
        cut = self.media.count(input_ids) != total or (any(media) and not answers)
        return expanded_ids, self.media.mask(expanded_ids, expanded_labels), cut

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.media.enabled:
            return self.preprocess_media(examples)
        self.media.refuse(examples)
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        rows = [row for row in zip(examples["_prompt"], examples["_response"], examples["_system"], examples["_tools"])
                if self.is_valid(row[0], row[1])]  # the others are counted by the loader, which reports the drop
        conversations = [(prompt + response, system, tools) for prompt, response, system, tools in rows]
        with prefetched(self.tokenizer, batch_texts(self.template, conversations)):
            for prompt, response, system, tools in rows:
                input_ids, labels = self.encode(prompt, response, system, tools)
                out["input_ids"].append(input_ids)
                out["attention_mask"].append([1] * len(input_ids))
                out["labels"].append(labels)
        return out

    def preprocess_media(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The multimodal path: placeholders expanded, media tokens masked, and the media paths carried along."""
        out = self.media.new_output(("input_ids", "attention_mask", "labels"))
        rows = zip(examples["_prompt"], examples["_response"], examples["_system"], examples["_tools"])
        for index, (prompt, response, system, tools) in enumerate(rows):
            if not self.is_valid(prompt, response):
                continue
            media = self.media.row(examples, index)
            with self.media.reading(examples, index):
                messages = self.media.expand(prompt + response, media, (system, tools))
                input_ids, labels, cut = self.encode_media(messages, system, tools, media)
            self.media.append(out, input_ids, labels, media, cut, self.data_args)
        return self.media.finish(out, self.data_args.streaming)

    def describe(self, example: dict[str, list[int]]) -> str:
        tok = self.tokenizer
        labels = [t for t in example["labels"] if t != IGNORE_INDEX]
        return (f"input_ids:\n{example['input_ids']}\ninputs:\n{tok.decode(example['input_ids'])}\n"
                f"label_ids:\n{example['labels']}\nlabels:\n{tok.decode(labels)}")
