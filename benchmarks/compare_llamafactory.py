"""llamafactory vs LlamaFactory 0.9.5 on the same machine, model, data, YAML, seed and thread count.

    .venv/bin/python benchmarks/compare_llamafactory.py [--repeats 4] [--steps 12] [--only 1,2,3,4,5]
                                                        [--precision bf16|fp32]

LlamaFactory goes into its own virtual environment (.bench/lf-venv, never ours), and this checkout into another
(.bench/ours-venv, editable, no extras), so each side runs its default install, both on the same CPU torch
2.13.0. LlamaFactory's own pins would pull torchvision/torchaudio, which swap in a CUDA torch, so it is installed
without them (`--no-deps` plus its other requirements), and the torchaudio import it makes at start-up is
answered by an empty stand-in (benchmarks/lf_stubs; text workloads never call it). Runs alternate A B B A A B ...
(use an even --repeats), so a steady drift in this machine's speed favours neither tool.

Workloads: 1 LoRA sft and 2 full sft for a fixed number of optimizer steps (one epoch of a mixed-length
alpaca set, so both tools see exactly the same tokens); 3 preprocessing 20,000 examples (first run: LlamaFactory's
`train` with a new tokenized_path, which tokenizes, saves and exits, against `lmf data tokenize`);
4 CLI start-up (`help`); 5 generation tokens/s for up to 128 new tokens with the transformers engine.
Model FLOPs per token = 4·N + 2·T (see src/llamafactory/train/throughput.py), against matmul peaks
measured here in fp32 and bf16 (the highest of readings taken before and after each training workload).

`--precision` sets the YAML's `bf16` (default true, as in LlamaFactory's examples). On a CPU without bf16
instructions (no AVX512-BF16/AMX) llamafactory trains such a YAML in fp32, as emulated bf16 is many times
slower there, while LlamaFactory runs it in bf16; `--precision fp32` compares both tools in fp32.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = os.path.join(ROOT, ".venv", "bin")  # `make setup`'s environment: converts the default model
BENCH = os.path.join(ROOT, ".bench")
OURS = os.path.join(BENCH, "ours-venv", "bin")  # this checkout's default install, as LlamaFactory's is its own
THEIRS = os.path.join(BENCH, "lf-venv", "bin")
STUBS = os.path.join(ROOT, "benchmarks", "lf_stubs")
LF_PINS = ["torch==2.13.0", "accelerate==1.11.0", "datasets==4.0.0", "peft==0.18.1", "trl==0.24.0",
           "transformers==4.57.1", "tokenizers<0.23"]
LF_DEPS = ["accelerate", "datasets", "peft", "trl", "transformers", "einops", "fire", "omegaconf", "pandas",
           "protobuf", "pydantic", "pyyaml", "safetensors", "scipy", "sentencepiece", "tiktoken", "tyro<0.9.0",
           "matplotlib", "numpy", "packaging", "fastapi", "uvicorn", "sse-starlette", "av<=16.0.0",
           "torchdata>=0.10.0,<=0.11.0", "modelscope", "hf-transfer"]
THREADS = os.environ.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
# TOKENIZERS_PARALLELISM is left as a user's shell has it (unset): "false" would keep the fast tokenizer's batch
# encoding on one thread, which llamafactory's preprocessing uses and LlamaFactory's does not.
ENV = {**{k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}, "OMP_NUM_THREADS": THREADS,
       "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def sh(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=kwargs.pop("env", ENV), **kwargs)


def setup_llamafactory() -> None:
    if os.path.exists(os.path.join(THEIRS, "llamafactory-cli")):
        return
    print("Installing LlamaFactory 0.9.5 into .bench/lf-venv (once)...", flush=True)
    os.makedirs(BENCH, exist_ok=True)
    pins = os.path.join(BENCH, "lf-constraints.txt")
    with open(pins, "w") as f:
        f.write("\n".join(LF_PINS) + "\n")
    pip = [os.path.join(THEIRS, "python"), "-m", "pip", "install", "-q", "-c", pins]
    steps = [[sys.executable, "-m", "venv", os.path.join(BENCH, "lf-venv")], pip + ["torch==2.13.0"],
             pip + ["--no-deps", "llamafactory==0.9.5"], pip + LF_DEPS]
    for step in steps:
        proc = sh(step)
        if proc.returncode != 0:
            sys.exit(f"setup failed: {' '.join(step)}\n{proc.stderr[-2000:]}")


def setup_ours() -> None:
    """This checkout installed as `pip install llamafactory` would be: no extras. The development environment
    also holds the test extras (bitsandbytes among them), which peft imports whenever they are installed, adding
    about a second and 50 MB to every run that LlamaFactory's environment, without them, does not pay."""
    if os.path.exists(os.path.join(OURS, "lmf")):
        return
    print("Installing this checkout (no extras) into .bench/ours-venv (once)...", flush=True)
    pip = [os.path.join(OURS, "python"), "-m", "pip", "install", "-q"]
    steps = [[sys.executable, "-m", "venv", os.path.join(BENCH, "ours-venv")], pip + ["torch==2.13.0"],
             pip + ["-c", os.path.join(ROOT, "requirements", "cpu.txt"), "-e", ROOT]]
    for step in steps:
        proc = sh(step)
        if proc.returncode != 0:
            sys.exit(f"setup failed: {' '.join(step)}\n{proc.stderr[-2000:]}")


def versions(bin_dir: str, names: list[str]) -> str:
    code = (f"import importlib.metadata as m\nfor n in {names!r}:\n    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: print(n, '-')")
    return " ".join(sh([os.path.join(bin_dir, "python"), "-c", code]).stdout.split("\n")).strip()


def default_model() -> str:
    """SmolLM2-135M-Instruct as an HF folder both transformers 5 (ours) and 4.57 (theirs) can read."""
    import shutil

    target = os.path.join(BENCH, "smollm2-135m-instruct")
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    source = _converted_model()
    staging = target + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    with open(os.path.join(staging, "config.json")) as f:
        config = json.load(f)
    config.setdefault("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    with open(os.path.join(staging, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(staging, "tokenizer_config.json")) as f:
        tok = json.load(f)
    tok["tokenizer_class"] = "GPT2TokenizerFast"  # the class SmolLM2 ships with; transformers 4 needs its name
    with open(os.path.join(staging, "tokenizer_config.json"), "w") as f:
        json.dump(tok, f, indent=2)
    os.replace(staging, target)
    return target


def _converted_model() -> str:
    """The HF folder of SmolLM2-135M-Instruct (converted from its packaged GGUF by our loader if needed)."""
    code = ("from llamafactory.hparams import ModelArguments\nfrom llamafactory.model.model_utils.hub import "
            "resolve_model\nprint(resolve_model(ModelArguments(model_name_or_path="
            "'HuggingFaceTB/SmolLM2-135M-Instruct')).path)")
    proc = sh([os.path.join(DEV, "python"), "-c", code])
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1]


def write_data(folder: str, rows: int) -> None:
    with open(os.path.join(ROOT, "data", "alpaca_en_demo.json"), encoding="utf-8") as f:
        demo = json.load(f)
    with open(os.path.join(folder, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(demo[:rows], f)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from preprocess_speed import make_rows

    with open(os.path.join(folder, "big.json"), "w", encoding="utf-8") as f:
        json.dump(make_rows(20000), f)
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump({"bench": {"file_name": "bench.json"}, "big": {"file_name": "big.json"}}, f)


def yaml_config(path: str, model: str, data: str, out: str, method: str, steps: int, **extra: object) -> str:
    """One YAML that both tools read unchanged."""
    lines = {
        "model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": method,
        "lora_rank": 8, "lora_target": "all", "dataset": "bench", "dataset_dir": data, "template": "smollm2",
        "cutoff_len": 512, "preprocessing_num_workers": 1, "overwrite_cache": True, "output_dir": out,
        "overwrite_output_dir": True, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": steps,
        "learning_rate": 2.0e-4 if method == "lora" else 2.0e-5, "lr_scheduler_type": "cosine",
        "warmup_steps": 1, "bf16": PRECISION[0] == "bf16", "use_cpu": True, "seed": 42, "dataloader_num_workers": 0,
    }
    lines.update(extra)
    with open(path, "w") as f:
        for key, value in lines.items():
            f.write(f"{key}: {json.dumps(value) if isinstance(value, str) else str(value).lower()}\n")
    return path


def timed(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak resident memory (GiB) of a command."""
    start = time.perf_counter()
    proc = sh(["/usr/bin/time", "-v", *cmd], env=env)
    wall = time.perf_counter() - start
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, (int(match.group(1)) / 1024**2 if match else float("nan")), proc


def tool(name: str) -> tuple[list[str], dict]:
    if name == "ours":
        return [os.path.join(OURS, "lmf")], ENV
    return [os.path.join(THEIRS, "llamafactory-cli")], {**ENV, "PYTHONPATH": STUBS}


def effective_tokens(cfg: str) -> int:
    """Non-padding tokens of the training set (both tools see each example once)."""
    code = ("import sys\nfrom llamafactory.train.tuner import run_data\n"
            "run_data('stats', [sys.argv[1]])")
    out = sh([os.path.join(OURS, "python"), "-c", code, cfg]).stdout
    match = re.search(r"of ([\d,]+) \(", out)
    if not match:
        sys.exit(f"could not count tokens:\n{out[-2000:]}")
    return int(match.group(1).replace(",", ""))


def train_run(name: str, cfg: str, out: str) -> dict[str, float]:
    cmd, env = tool(name)
    wall, memory, proc = timed([*cmd, "train", cfg], env)
    if proc.returncode != 0:
        sys.exit(f"{name} training failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "train_results.json")) as f:
        results = json.load(f)
    with open(os.path.join(out, "trainer_state.json")) as f:
        history = [e for e in json.load(f)["log_history"] if "loss" in e]
    return {"runtime": results["train_runtime"], "wall": wall, "memory": memory, "loss": history[-1]["loss"]}


def preprocess_run(name: str, cfg: str, tmp: str) -> float:
    cmd, env = tool(name)
    path = tempfile.mkdtemp(dir=tmp)
    os.rmdir(path)
    # LlamaFactory tokenizes, saves and exits when a run's tokenized_path is new; `lmf data tokenize` does the same
    # (plus statistics) without loading a model, while `lmf train` would go on to train.
    action = ["data", "tokenize"] if name == "ours" else ["train"]
    args = [*cmd, *action, cfg, "dataset=big", f"tokenized_path={path}", "overwrite_cache=true"]
    wall, _, proc = timed(args, env)
    if not os.path.isdir(path):
        sys.exit(f"{name} did not write {path}:\n{proc.stderr[-2000:]}")
    return wall


GENERATE = {
    "ours": ("from llamafactory.chat.chat_model import ChatModel\n"
             "m = ChatModel(['--model_name_or_path', MODEL, '--template', 'smollm2', '--do_sample', 'false', "
             "'--max_new_tokens', '128'])\n"),
    "theirs": ("from llamafactory.chat import ChatModel\n"
               "m = ChatModel(dict(model_name_or_path=MODEL, template='smollm2', do_sample=False, "
               "max_new_tokens=128, infer_dtype='float32'))\n"),
}


def generate_run(name: str, model: str) -> float:
    code = (f"import time\nMODEL = {model!r}\n" + GENERATE[name] +
            "q = [{'role': 'user', 'content': 'Write a long, detailed story about a dragon who learns to read.'}]\n"
            "m.chat(q, max_new_tokens=8)\n"
            "start = time.perf_counter(); r = m.chat(q)[0]; elapsed = time.perf_counter() - start\n"
            "print('TOKENS', r.response_length, elapsed)")
    bin_dir, env = (OURS, ENV) if name == "ours" else (THEIRS, {**ENV, "PYTHONPATH": STUBS})
    proc = sh([os.path.join(bin_dir, "python"), "-c", code], env=env)
    match = re.search(r"TOKENS (\d+) ([\d.]+)", proc.stdout)
    if not match:
        sys.exit(f"{name} generation failed:\n{proc.stderr[-2000:]}")
    return int(match.group(1)) / float(match.group(2))


def startup_run(name: str) -> float:
    cmd, env = tool(name)
    start = time.perf_counter()
    sh([*cmd, "help"], env=env)
    return time.perf_counter() - start


def _has_gpu() -> bool:
    return sh([os.path.join(OURS, "python"), "-c", "import torch; print(torch.cuda.is_available())"]
              ).stdout.strip() == "True"


def peaks() -> tuple[float, float]:
    """fp32 and bf16 matmul FLOP/s, measured now (best of a 1-second burst each)."""
    code = ("import torch\nfrom llamafactory.train.throughput import matmul_peak\n"
            "print(matmul_peak(torch.float32, seconds=1.0), matmul_peak(torch.bfloat16, seconds=1.0))")
    out = sh([os.path.join(OURS, "python"), "-c", code]).stdout.split()
    return float(out[0]), float(out[1])


def flops() -> tuple[float, float]:
    """Model FLOPs per token of full and LoRA training."""
    code = ("from llamafactory.train.throughput import flops_per_token\n"
            "from transformers import AutoModelForCausalLM\nfrom llamafactory.hparams import ModelArguments, "
            "FinetuningArguments\nfrom llamafactory.model.adapter import init_adapter\nimport sys\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\nprint(flops_per_token(m))\n"
            "m = init_adapter(m, ModelArguments(model_name_or_path='x'), FinetuningArguments(lora_rank=8), True)\n"
            "print(flops_per_token(m))")
    out = sh([os.path.join(OURS, "python"), "-c", code, MODEL_DIR[0]]).stdout.split()
    return float(out[0]), float(out[1])


def order(repeat: int) -> tuple[str, str]:
    """A B, then B A: with an even number of repeats, a steady drift in the machine's speed favours neither tool."""
    return ("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours")


def alternating(measure: Callable[[str], float], repeats: int) -> dict[str, float]:
    """Median of `repeats` runs per tool, in the order A B B A A B ..."""
    runs: dict[str, list[float]] = {"ours": [], "theirs": []}
    for repeat in range(repeats):
        for name in order(repeat):
            runs[name].append(measure(name))
    return {name: statistics.median(values) for name, values in runs.items()}


MODEL_DIR: list[str] = []
PRECISION: list[str] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--only", default="1,2,3,4,5")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="the YAML's bf16 key for workloads 1-3 (see above for CPUs without bf16 instructions)")
    args = parser.parse_args()
    PRECISION.append(args.precision)
    only = {int(x) for x in args.only.split(",")}
    setup_llamafactory()
    setup_ours()
    model = default_model()
    MODEL_DIR.append(model)
    names = ["transformers", "peft", "trl", "datasets", "accelerate", "torch", "tokenizers"]
    print(f"ours:   llamafactory (this checkout) {versions(OURS, names)}")
    print(f"theirs: llamafactory 0.9.5 {versions(THEIRS, names)}")
    print(f"threads: {THREADS}; model: {model}")
    full_fpt, lora_fpt = flops()
    # This VM's speed drifts (a burst has read half the peak of another minutes later), so the peak is measured
    # before and after each training workload and the highest reading is used: the share it gives is a lower bound.
    measured = [peaks()]
    native = sh([os.path.join(OURS, "python"), "-c", "from llamafactory.extras.env import cpu_has_fast_bf16 "
                 "as f; print(f())"]).stdout.strip()
    print(f"YAML precision: {args.precision}; bf16 instructions on this CPU: {native}"
          + ("  (llamafactory trains bf16: true in fp32 here)" if args.precision == "bf16" and native != "True"
             and not _has_gpu() else ""))
    rows: list[tuple[str, str, float, float]] = []
    shares: list[tuple[int, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        rows_per_epoch = args.steps * 8
        write_data(data, rows_per_epoch)
        for workload, method in ((1, "lora"), (2, "full")):
            if workload not in only:
                continue
            out = os.path.join(tmp, f"out{workload}")
            cfg = yaml_config(os.path.join(tmp, f"w{workload}.yaml"), model, data, out, method, args.steps)
            tokens = effective_tokens(cfg)
            results: dict[str, list[dict[str, float]]] = {"ours": [], "theirs": []}
            for repeat in range(args.repeats):
                for name in order(repeat):
                    results[name].append(train_run(name, cfg, out))
                    r = results[name][-1]
                    print(f"[{workload}.{repeat + 1}] {name}: {tokens / r['runtime']:.1f} tok/s, loss {r['loss']:.4f}, "
                          f"{r['memory']:.2f} GiB", flush=True)
            measured.append(peaks())
            fpt = lora_fpt if method == "lora" else full_fpt
            for metric, key, better in (("effective tokens/s", "tps", "higher"), ("wall time (s)", "wall", "lower"),
                                        ("peak memory (GiB)", "memory", "lower"), ("final loss", "loss", "lower")):
                med = {n: statistics.median(tokens / r["runtime"] if key == "tps" else r[key] for r in results[n])
                       for n in results}
                rows.append((f"{workload} {method} sft: {metric}", better, med["ours"], med["theirs"]))
            shares.append((workload, method, fpt * statistics.median(tokens / r["runtime"] for r in results["ours"])))
        if 3 in only:
            cfg = yaml_config(os.path.join(tmp, "w3.yaml"), model, data, os.path.join(tmp, "out3"), "lora", 1)
            med = alternating(lambda n: 20000 / preprocess_run(n, cfg, tmp), args.repeats)
            label = "3 preprocess 20k: examples/s (first run, CLI included)"
            rows.append((label, "higher", med["ours"], med["theirs"]))
        if 4 in only:
            med = alternating(startup_run, 6)
            rows.append(("4 CLI start-up `help` (s)", "lower", med["ours"], med["theirs"]))
        if 5 in only:
            med = alternating(lambda n: generate_run(n, model), args.repeats)
            rows.append(("5 generation (tokens/s)", "higher", med["ours"], med["theirs"]))
    fp32_peak, bf16_peak = max(m[0] for m in measured), max(m[1] for m in measured)
    print(f"\nmatmul peak, highest of {len(measured)} readings: fp32 {fp32_peak / 1e9:.1f} GFLOP/s, bf16 "
          f"{bf16_peak / 1e9:.1f} GFLOP/s (readings: {', '.join(f'{b / 1e9:.0f}' for _, b in measured)} bf16)")
    for workload, method, model_flops in shares:  # against the dtype either tool could have chosen here
        print(f"{workload} {method}: ours {model_flops / 1e9:.2f} model GFLOP/s = "
              f"{100 * model_flops / max(fp32_peak, bf16_peak):.1f}% of the matmul peak")
    print(f"\n{'workload / metric':<58} {'ours':>10} {'theirs':>10} {'ours/theirs':>12} {'advantage':>10}")
    for label, better, ours, theirs in rows:
        ratio = ours / theirs if theirs else float("nan")
        advantage = ratio if better == "higher" else (1 / ratio if ratio else float("nan"))
        print(f"{label:<58} {ours:>10.3f} {theirs:>10.3f} {ratio:>11.2f}x {advantage:>9.2f}x  ({better} is better)")


if __name__ == "__main__":
    main()
