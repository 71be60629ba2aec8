"""`lmf env`: what a bug report needs, gathered without importing torch (so it answers instantly)."""

import glob
import os
import platform
from importlib import metadata

from .. import __version__

CORE = ["torch", "transformers", "datasets", "accelerate", "peft", "trl"]
OPTIONAL = ["deepspeed", "bitsandbytes", "vllm", "sglang", "gradio"]


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def accelerators() -> list[str]:
    """Names of visible GPUs, read from the driver's files rather than by starting CUDA."""
    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Model:"):
                        names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    visible = os.getenv("CUDA_VISIBLE_DEVICES")
    if names and visible is not None:
        wanted = [v for v in visible.split(",") if v.strip()]
        names = names[: len(wanted)]
    if not names and os.path.exists("/dev/kfd"):
        names.append("AMD GPU (ROCm)")
    return names


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without them torch emulates bf16 matmuls,
    many times slower than fp32. Imports torch: call it only where torch is needed anyway."""
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def cpu_threads() -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    omp = os.getenv("OMP_NUM_THREADS")
    return f"{omp} (OMP_NUM_THREADS) of {usable} usable" if omp else f"{usable} usable (OMP_NUM_THREADS unset)"


def collect() -> dict[str, str]:
    info = {
        "llamafactory version": __version__,
        "Platform": platform.platform(),
        "Python version": platform.python_version(),
    }
    for name in CORE:
        info[f"{name} version"] = package_version(name) or "not installed"
    for name in OPTIONAL:
        version = package_version(name)
        if version:
            info[f"{name} version"] = version
    gpus = accelerators()
    info["Accelerator"] = ", ".join(gpus) if gpus else "CPU only"
    info["CPU threads"] = cpu_threads()
    return info


def print_env() -> None:
    width = max(len(k) for k in collect())
    for key, value in collect().items():
        print(f"- {key.ljust(width)} : {value}")
