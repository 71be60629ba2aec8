"""Peak memory and speed of `lmf train` with the CPU kernel caches at the libraries' 1,024 entries vs lmf's 128.

    .venv/bin/python benchmarks/cache_memory.py [--steps 12] [--repeats 1] [--methods lora,full] [--fp32]

oneDNN and PyTorch's ideep layer cache each bf16 matmul kernel they build, keyed by shape; padding-free (and
padded) batches change shape every step, so with 1,024 entries a run's resident memory keeps growing until the
caches fill. `lmf` sets ONEDNN_PRIMITIVE_CACHE_CAPACITY and LRU_CACHE_CAPACITY to 128 unless they are set
(extras/envs.py). Same YAML as workloads 1-2 of compare_llamafactory.py (SmolLM2-135M-Instruct, 96 mixed-length
alpaca rows, batch 4 x 2, cutoff 512); the two settings alternate. Prints effective tokens/s (the run's own
report) and peak resident memory (/usr/bin/time).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LMF = os.path.join(os.path.dirname(sys.executable), "lmf")


def run(cfg: str, capacity: str | None) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    if capacity is not None:
        env.update(ONEDNN_PRIMITIVE_CACHE_CAPACITY=capacity, LRU_CACHE_CAPACITY=capacity)
    proc = subprocess.run(["/usr/bin/time", "-v", LMF, "train", cfg], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    speed = re.search(r"Throughput: ([\d.]+) effective tokens/s", proc.stdout + proc.stderr)
    memory = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return float(speed.group(1)), int(memory.group(1)) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--fp32", action="store_true", help="bf16: false in the YAML (fp32 kernels are not cached)")
    args = parser.parse_args()

    import compare_llamafactory as bench

    bench.PRECISION.append("fp32" if args.fp32 else "bf16")
    settings = {"1024 (library default)": "1024", "128 (lmf default)": None}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        bench.write_data(data, args.steps * 8)
        for method in args.methods.split(","):
            cfg = bench.yaml_config(os.path.join(tmp, f"{method}.yaml"), bench.default_model(), data,
                                    os.path.join(tmp, "out"), method, args.steps)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
            for _ in range(args.repeats):
                for name, capacity in settings.items():
                    results[name].append(run(cfg, capacity))
                    print(f"{method}, caches {name}: {results[name][-1][0]:.1f} tok/s, "
                          f"{results[name][-1][1]:.2f} GiB", flush=True)
            for name, runs in results.items():
                print(f"  {method} {name:24s} best {max(r[0] for r in runs):7.1f} tok/s   "
                      f"peak memory {min(r[1] for r in runs):.2f} GiB")


if __name__ == "__main__":
    main()
