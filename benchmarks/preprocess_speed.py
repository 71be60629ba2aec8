"""Preprocessing speed: 20,000 mixed-length sft examples through the whole data pipeline.

    .venv/bin/python benchmarks/preprocess_speed.py [--rows 20000] [--workers 1]

Uses the default model's tokenizer and the smollm2 template. Reports examples per second for the first
run (load, convert, tokenize) and for a second run over the same data and settings, which reads the
datasets cache instead of tokenizing again.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

WORDS = ("the model learns to answer questions about data training tokens with care and detail while "
         "keeping each reply short clear and correct for the person who asked it").split()


def make_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Instruction data with a long tail of lengths, like real sets: most short, some long."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    rows = []
    for _ in range(count):
        long = rng.random() < 0.15
        rows.append({"instruction": text(rng.randint(5, 40)),
                     "input": text(rng.randint(50, 400)) if long else "",
                     "output": text(rng.randint(100, 500) if long else rng.randint(10, 120))})
    return rows


def run(folder: str, cache: str, workers: int | None, overwrite: bool) -> float:
    from transformers import Seq2SeqTrainingArguments

    from llamafactory.data.loader import get_dataset
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model.loader import load_tokenizer

    model_args = ModelArguments(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=cache)
    data_args = DataArguments(dataset="bench", dataset_dir=folder, template="smollm2", cutoff_len=512,
                              preprocessing_num_workers=workers, overwrite_cache=overwrite)
    training = Seq2SeqTrainingArguments(output_dir=os.path.join(folder, "out"), use_cpu=True, report_to="none")
    tokenizer = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    start = time.perf_counter()
    dataset = get_dataset(template, model_args, data_args, training, "sft", tokenizer)["train_dataset"]
    elapsed = time.perf_counter() - start
    assert len(dataset) > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=None, help="preprocessing_num_workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "bench.json"), "w") as f:
            json.dump(make_rows(args.rows), f)
        with open(os.path.join(folder, "dataset_info.json"), "w") as f:
            json.dump({"bench": {"file_name": "bench.json"}}, f)
        cache = os.path.join(folder, "hf-cache")
        first = run(folder, cache, args.workers, overwrite=False)
        cached = run(folder, cache, args.workers, overwrite=False)
    print(f"\n{'run':<12} {'seconds':>8} {'examples/s':>11}")
    print(f"{'first':<12} {first:>8.2f} {args.rows / first:>11.0f}")
    print(f"{'cached':<12} {cached:>8.2f} {args.rows / cached:>11.0f}")
    print(f"cached run is {first / cached:.1f}x faster")


if __name__ == "__main__":
    main()
