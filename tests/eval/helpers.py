"""Shared by the eval tests: small task folders written on the spot, a fixed-logits model, a random LoRA adapter."""

import csv
import json
import os
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ["question", "A", "B", "C", "D", "answer"]


def write_task(task_dir: str, name: str, subjects: dict[str, tuple[str, list[tuple], list[tuple]]],
               fmt: str = "csv") -> str:
    """subjects: key -> (category, test rows, dev rows); a row is (question, A, B, C, D, answer)."""
    folder = os.path.join(task_dir, name)
    mapping = {}
    for key, (category, test, dev) in subjects.items():
        mapping[key] = {"name": key.replace("_", " "), "category": category}
        for split, rows in (("test", test), ("dev", dev)):
            if rows is None:
                continue
            os.makedirs(os.path.join(folder, split), exist_ok=True)
            path = os.path.join(folder, split, f"{key}.{fmt}")
            with open(path, "w", encoding="utf-8", newline="") as f:
                if fmt == "csv":
                    writer = csv.writer(f)
                    writer.writerow(COLUMNS)
                    writer.writerows(rows)
                elif fmt == "jsonl":
                    f.writelines(json.dumps(dict(zip(COLUMNS, r))) + "\n" for r in rows)
                else:
                    json.dump([dict(zip(COLUMNS, r)) for r in rows], f)
    with open(os.path.join(folder, "mapping.json"), "w", encoding="utf-8") as f:
        json.dump(mapping, f)
    return folder


class FixedLogits:
    """Stands in for a causal LM: for each prompt it returns the letter logits the test designed for the prompt's
    last question (found by its text), and a far larger logit on a token that is no answer letter."""

    def __init__(self, tokenizer, designed: dict[str, dict[str, float]]) -> None:
        import torch

        self.tokenizer, self.designed = tokenizer, designed
        self.device = torch.device("cpu")
        self.vocab = len(tokenizer)
        self.distractor = tokenizer.encode(" the", add_special_tokens=False)[0]
        self.calls = 0

    def __call__(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        import torch

        self.calls += 1
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            text = self.tokenizer.decode(ids[mask.bool()].tolist())
            question = text.rsplit("<|im_start|>user\n", 1)[1].split("\n")[0]
            logits = torch.zeros(self.vocab)
            logits[self.distractor] = 100.0
            for letter, value in self.designed[question].items():
                logits[self.tokenizer.convert_tokens_to_ids(letter)] = value
            rows.append(logits)
        return SimpleNamespace(logits=torch.stack(rows)[:, None, :])


def build_lora_adapter(model_dir: str, out: str) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(out)
    return out
