"""Prompts for generation (ppo, predict): the prompt as input, the reference answer as labels."""

from typing import Any

from ...extras.constants import IGNORE_INDEX
from ..formatter import prefetched
from ..template import batch_texts
from .supervised import SupervisedProcessor, split_budget


class UnsupervisedProcessor(SupervisedProcessor):
    """Prompts for generation (ppo, predict): input is the prompt; labels hold the reference answer, if any."""

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return len(prompt) % 2 == 1 and len(response) <= 1

    def prompt_and_reference(self, messages: list[dict[str, str]], has_answer: bool, system: str | None,
                             tools: str | None, cutoff_len: int) -> tuple[list[int], list[int], list[int]]:
        """(kept prompt ids, the whole prompt's ids, reference ids) within `cutoff_len`."""
        turns = self.template.encode_multiturn(self.tokenizer, messages, system or None, tools or None)
        prompt_ids = [t for source, target in turns[:-1] for t in source + target] + turns[-1][0]
        reference = turns[-1][1] if has_answer else []
        prompt_len, ref_len = split_budget(len(prompt_ids), len(reference), cutoff_len)
        kept = prompt_ids[-prompt_len:] if prompt_len else []  # keep the end: the question itself
        return kept, prompt_ids, reference[:ref_len]

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.media.enabled:
            return self.preprocess_media(examples)
        self.media.refuse(examples)
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        rows = [(prompt, response or [{"role": "assistant", "content": ""}], bool(response), system, tools)
                for prompt, response, system, tools in zip(examples["_prompt"], examples["_response"],
                                                           examples["_system"], examples["_tools"])
                if self.is_valid(prompt, response)]
        conversations = [(prompt + answer, system, tools) for prompt, answer, _, system, tools in rows]
        with prefetched(self.tokenizer, batch_texts(self.template, conversations)):
            for prompt, answer, has_answer, system, tools in rows:
                prompt_ids, _, reference = self.prompt_and_reference(prompt + answer, has_answer, system, tools,
                                                                     self.data_args.cutoff_len)
                out["input_ids"].append(prompt_ids)
                out["attention_mask"].append([1] * len(prompt_ids))
                out["labels"].append(reference)
        return out

    def preprocess_media(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Prompts with their placeholders expanded; a prompt whose media tokens cutoff_len would cut is flagged."""
        out = self.media.new_output(("input_ids", "attention_mask", "labels"))
        rows = zip(examples["_prompt"], examples["_response"], examples["_system"], examples["_tools"])
        cutoff = self.data_args.cutoff_len
        for index, (prompt, response, system, tools) in enumerate(rows):
            if not self.is_valid(prompt, response):
                continue
            media = self.media.row(examples, index)
            answer = response or [{"role": "assistant", "content": ""}]
            with self.media.reading(examples, index):
                messages = self.media.expand(prompt + answer, media, (system, tools))
                kept, whole, reference = self.prompt_and_reference(messages, bool(response), system, tools, cutoff)
                input_ids, _ = self.media.expand_ids(kept, [IGNORE_INDEX] * len(kept), media)
                extra = len(input_ids) - len(kept)
                if extra and len(input_ids) > cutoff:
                    kept, whole, reference = self.prompt_and_reference(messages, bool(response), system, tools,
                                                                       max(cutoff - extra, 0))
                    input_ids, _ = self.media.expand_ids(kept, [IGNORE_INDEX] * len(kept), media)
            # cut inside the media, or (paligemma's prefix taking the whole budget) no prompt text left at all
            cut = self.media.count(kept) != self.media.count(whole) or (bool(whole) and not kept)
            self.media.append(out, input_ids, reference, media, cut, self.data_args)
        return self.media.finish(out, self.data_args.streaming)
