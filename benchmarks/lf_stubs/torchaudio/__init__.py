"""Import stand-in used only by benchmarks/compare_llamafactory.py.

LlamaFactory 0.9.5 imports torchaudio at start-up even for text-only training, and no torchaudio release
matches the CPU torch 2.13.0 both tools run on. The text workloads never call it; any use fails loudly.
"""


def __getattr__(name: str) -> None:
    raise ImportError(f"torchaudio.{name}: torchaudio is not installed in the benchmark environment")
