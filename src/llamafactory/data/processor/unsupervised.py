"""Prompts for generation (ppo, predict): the prompt as input, the reference answer as labels."""

from typing import Any

from .supervised import SupervisedProcessor, split_budget


class UnsupervisedProcessor(SupervisedProcessor):
    """Prompts for generation (ppo, predict): input is the prompt; labels hold the reference answer, if any."""

    @staticmethod
    def is_valid(prompt: list[dict[str, str]], response: list[dict[str, str]]) -> bool:
        return len(prompt) % 2 == 1 and len(response) <= 1

    def preprocess(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for prompt, response, system, tools in zip(examples["_prompt"], examples["_response"], examples["_system"],
                                                   examples["_tools"]):
            if not self.is_valid(prompt, response):
                continue
            answer = response or [{"role": "assistant", "content": ""}]
            turns = self.template.encode_multiturn(self.tokenizer, prompt + answer, system or None, tools or None)
            prompt_ids = [t for source, target in turns[:-1] for t in source + target] + turns[-1][0]
            reference = turns[-1][1] if response else []
            prompt_len, ref_len = split_budget(len(prompt_ids), len(reference), self.data_args.cutoff_len)
            prompt_ids = prompt_ids[-prompt_len:] if prompt_len else []  # keep the end: the question itself
            out["input_ids"].append(prompt_ids)
            out["attention_mask"].append([1] * len(prompt_ids))
            out["labels"].append(reference[:ref_len])
        return out
