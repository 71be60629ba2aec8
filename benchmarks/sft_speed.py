"""Training speed of the demo recipe on this machine, for a few settings, as ratios to a baseline.

    .venv/bin/python benchmarks/sft_speed.py [--steps 12] [--repeats 2]

Each configuration runs the real `lmf train` on SmolLM2-135M-Instruct (LoRA, identity data, batch 4 x 2)
for a fixed number of optimizer steps, alternating configurations so that machine noise spreads evenly.
It reports seconds per optimizer step from trainer_state.json (training loop only, loading excluded)
and the last logged loss.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMF = os.path.join(os.path.dirname(sys.executable), "lmf")
CONFIG = os.path.join(ROOT, "examples", "train_lora", "smollm2_lora_sft.yaml")

CONFIGS = {
    "bf16, no grad ckpt (demo)": ["bf16=true", "force_cpu_bf16=true", "disable_gradient_checkpointing=true"],
    "fp32, no grad ckpt": ["bf16=false", "disable_gradient_checkpointing=true"],
    "bf16, grad ckpt": ["bf16=true", "force_cpu_bf16=true", "disable_gradient_checkpointing=false"],
}


def prepare_data(folder: str) -> None:
    with open(os.path.join(ROOT, "data", "identity.json"), encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        row["output"] = row["output"].replace("{{name}}", "Lumen").replace("{{author}}", "the llamafactory team")
    with open(os.path.join(folder, "identity.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f)
    with open(os.path.join(folder, "dataset_info.json"), "w", encoding="utf-8") as f:
        json.dump({"identity": {"file_name": "identity.json"}}, f)


def run(overrides: list[str], steps: int, data: str, out: str) -> tuple[float, float]:
    cmd = [LMF, "train", CONFIG, f"dataset_dir={data}", f"output_dir={out}", "overwrite_output_dir=true",
           f"max_steps={steps}", "logging_steps=1", "save_strategy=no", "plot_loss=false", *overrides]
    return timed_run(cmd, steps, out)


def timed_run(cmd: list[str], steps: int, out: str) -> tuple[float, float]:
    """Run one `lmf train` command; seconds per optimizer step (training loop only) and the last logged loss."""
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "train_results.json")) as f:
        runtime = json.load(f)["train_runtime"]
    with open(os.path.join(out, "trainer_state.json")) as f:
        losses = [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]
    return runtime / steps, losses[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        prepare_data(tmp)
        for repeat in range(args.repeats):
            for name, overrides in CONFIGS.items():
                results[name].append(run(overrides, args.steps, tmp, os.path.join(tmp, "out")))
                print(f"[{repeat + 1}/{args.repeats}] {name}: {results[name][-1][0]:.2f} s/step", flush=True)
    baseline = statistics.median(r[0] for r in results[next(iter(CONFIGS))])
    print(f"\n{'configuration':<30} {'s/step (median)':>16} {'speed vs baseline':>18} {'last loss':>10}")
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        print(f"{name:<30} {seconds:>16.2f} {baseline / seconds:>17.2f}x {runs[-1][1]:>10.3f}")


if __name__ == "__main__":
    main()
