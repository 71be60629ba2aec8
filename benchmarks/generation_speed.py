"""Generation tokens/s of the transformers engine through ChatModel, with no HTTP in between.

    .venv/bin/python benchmarks/generation_speed.py [--repeats 3] [--model HuggingFaceTB/SmolLM2-135M-Instruct]
                                                    [--dtypes auto,float32]

Each repeat is compare_llamafactory.py's workload 5 for our side (one fresh process: load the model with
ChatModel, warm up with 8 tokens, then time one greedy answer of up to 128 new tokens to a fixed prompt), so the
figure is comparable with that table; the median over repeats is printed, per `infer_dtype` (`auto` is bf16 on
a CPU with bf16 instructions, fp32 otherwise; dtypes alternate). The API benchmark (api_load.py) against this
figure shows what the server adds.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_llamafactory  # noqa: E402 - the measurement lives there, once
from compare_llamafactory import THREADS, generate_run  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=MODEL, help="model id or folder (SmolLM2 works offline)")
    parser.add_argument("--dtypes", default="auto", help="infer_dtype values to compare, e.g. auto,float32")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    base = compare_llamafactory.GENERATE["ours"]
    rates: dict[str, list[float]] = {dtype: [] for dtype in args.dtypes.split(",")}
    for repeat in range(args.repeats):
        for dtype in rates:
            compare_llamafactory.GENERATE["ours"] = base.replace("'128'", f"'128', '--infer_dtype', {dtype!r}")
            rates[dtype].append(generate_run("ours", args.model))
            print(f"[{repeat + 1}/{args.repeats}] infer_dtype {dtype}: {rates[dtype][-1]:.1f} tokens/s", flush=True)
    for dtype, values in rates.items():
        print(f"generation (ChatModel, greedy, up to 128 new tokens, {THREADS} threads, infer_dtype {dtype}): "
              f"median {statistics.median(values):.1f} tokens/s over {args.repeats} runs "
              f"(min {min(values):.1f}, max {max(values):.1f})")

if __name__ == "__main__":
    main()
