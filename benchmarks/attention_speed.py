"""Causal attention of one example, forward plus backward: sdpa's flash kernel against two matmuls around an fp32
softmax (model/model_utils/varlen_attention.py), by example length, on this machine's CPU.

    .venv/bin/python benchmarks/attention_speed.py [--threads 2] [--repeats 40] [--dtype bf16|fp32|both]

Heads are SmolLM2-135M's (9 query heads sharing 3 key/value heads, 64 dims), laid out as the model hands them
over (projected, then transposed). Each length times both kernels in alternation; the median is reported.
The padding-free path takes the matmul kernel in bf16 up to varlen_attention.MATMUL_MAX_LEN tokens: this
script is where that bound comes from.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

LENGTHS = (16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--dtype", default="both", choices=("bf16", "fp32", "both"))
    args = parser.parse_args()

    import torch

    from llamafactory.model.model_utils.varlen_attention import MATMUL_MAX_LEN, causal_matmul_attention

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def step_ms(kernel, tensors) -> float:
        q, k, v, grad = tensors
        start = time.perf_counter()
        kernel(q, k, v).backward(grad)
        return (time.perf_counter() - start) * 1e3

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    chosen = list(dtypes) if args.dtype == "both" else [args.dtype]
    print(f"threads {args.threads}; forward + backward, median of {args.repeats}; matmul path used in bf16 up to "
          f"{MATMUL_MAX_LEN} tokens")
    for name in chosen:
        dtype = dtypes[name]
        print(f"\n{name:>5} length | flash ms | matmul ms | flash / matmul | max |diff| of outputs")
        for length in LENGTHS:
            q = torch.randn(1, length, 9, 64, dtype=dtype).transpose(1, 2).requires_grad_()
            k = torch.randn(1, length, 3, 64, dtype=dtype).transpose(1, 2).requires_grad_()
            v = torch.randn(1, length, 3, 64, dtype=dtype).transpose(1, 2).requires_grad_()
            tensors = (q, k, v, torch.randn(1, 9, length, 64, dtype=dtype))
            with torch.no_grad():
                diff = (flash(q, k, v).float() - causal_matmul_attention(q, k, v).float()).abs().max().item()
            times: dict[str, list[float]] = {"flash": [], "matmul": []}
            for kernel in (flash, causal_matmul_attention):  # warm-up
                step_ms(kernel, tensors)
            for _ in range(args.repeats):
                times["flash"].append(step_ms(flash, tensors))
                times["matmul"].append(step_ms(causal_matmul_attention, tensors))
            f, m = statistics.median(times["flash"]), statistics.median(times["matmul"])
            print(f"{length:>12} | {f:8.2f} | {m:9.2f} | {f / m:14.2f} | {diff:.2e}")


if __name__ == "__main__":
    main()
