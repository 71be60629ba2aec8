"""Seconds per optimizer step of each training stage, bf16 against fp32, on whatever device this machine has.

    python benchmarks/stage_speed.py [--model PATH_OR_ID] [--stages sft,dpo,kto,rm] [--steps 10] [--repeats 2]

Each stage runs the real `lmf train` on its example config (LoRA, the demo data, batches of --batch rows of
at most --cutoff tokens) for a fixed number of optimizer steps; precisions alternate so machine noise spreads
evenly. Reported: seconds per step from train_results.json (the training loop only, loading excluded), the
bf16 speed-up, and the last loss.
`--random-weights` builds a model with the architecture and tokenizer of --model but random weights, which
times the same work where the weights cannot be copied (a GPU machine without the model).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

from sft_speed import timed_run  # this folder is on sys.path when a script here runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMF = shutil.which("lmf", path=os.path.dirname(sys.executable)) or shutil.which("lmf") or "lmf"
EXAMPLES = {"sft": "smollm2_lora_sft.yaml", "dpo": "smollm2_lora_dpo.yaml", "kto": "smollm2_lora_kto.yaml",
            "rm": "smollm2_lora_reward.yaml"}


def random_copy(model: str, folder: str) -> str:
    """The model's config and tokenizer with freshly initialised weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    return folder


def run(model: str, stage: str, precision: str, steps: int, out: str, batch: int, cutoff: int) -> tuple[float, float]:
    cmd = [LMF, "train", os.path.join(ROOT, "examples", "train_lora", EXAMPLES[stage]), f"model_name_or_path={model}",
           f"dataset_dir={os.path.join(ROOT, 'data')}", f"output_dir={out}", "overwrite_output_dir=true",
           f"max_steps={steps}", "logging_steps=1", "save_strategy=no", "plot_loss=false", f"cutoff_len={cutoff}",
           f"per_device_train_batch_size={batch}", "gradient_accumulation_steps=1", f"bf16={precision == 'bf16'}",
           "force_cpu_bf16=true"]  # measure bf16 itself, also on a CPU where lmf would train in fp32
    return timed_run(cmd, steps, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--stages", default="sft,dpo,kto,rm")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = random_copy(args.model, os.path.join(tmp, "model")) if args.random_weights else args.model
        for repeat in range(args.repeats):
            for stage in stages:
                for precision in ("fp32", "bf16"):
                    result = run(model, stage, precision, args.steps, os.path.join(tmp, "out"), args.batch, args.cutoff)
                    results.setdefault((stage, precision), []).append(result)
                    print(f"[{repeat + 1}/{args.repeats}] {stage} {precision}: {result[0]:.3f} s/step", flush=True)
    print(f"\n{'stage':<6} {'fp32 s/step':>12} {'bf16 s/step':>12} {'bf16 speed-up':>14} {'last loss fp32/bf16':>20}")
    for stage in stages:
        fp32, bf16 = results[(stage, "fp32")], results[(stage, "bf16")]
        a, b = statistics.median(r[0] for r in fp32), statistics.median(r[0] for r in bf16)
        print(f"{stage:<6} {a:>12.3f} {b:>12.3f} {a / b:>13.2f}x {fp32[-1][1]:>9.3f}/{bf16[-1][1]:.3f}")


if __name__ == "__main__":
    main()
