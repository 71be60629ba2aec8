"""Every environment variable llamafactory reads, read in this one place."""

import os

_TRUE = {"1", "true", "yes", "y", "on"}


def _flag(name: str) -> bool:
    return os.getenv(name, "0").strip().lower() in _TRUE


def verbosity() -> str:
    """LLAMAFACTORY_VERBOSITY: DEBUG, INFO (default), WARN or ERROR. DEBUG also shows tracebacks."""
    value = os.getenv("LLAMAFACTORY_VERBOSITY", "INFO").strip().upper()
    return "WARNING" if value == "WARN" else value


def debug() -> bool:
    return verbosity() == "DEBUG"


def disable_version_check() -> bool:
    """DISABLE_VERSION_CHECK=1 skips the check of dependency versions before a run."""
    return _flag("DISABLE_VERSION_CHECK")


def use_modelscope() -> bool:
    """USE_MODELSCOPE_HUB=1 fetches models and datasets from ModelScope instead of Hugging Face."""
    return _flag("USE_MODELSCOPE_HUB")


def use_mca() -> bool:
    """USE_MCA=1 asks for Megatron-core training through the mcore_adapter package (see docs/distributed.md)."""
    return _flag("USE_MCA")


def force_torchrun() -> bool:
    """FORCE_TORCHRUN=1 launches training under torchrun even with one device (the only way on a CPU)."""
    return _flag("FORCE_TORCHRUN")


TORCHRUN_VARIABLES = ("NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "RDZV_ID", "MIN_NNODES",
                      "MAX_NNODES", "MAX_RESTARTS")


def torchrun_settings() -> dict[str, str]:
    """The launcher's torchrun settings that are set (see docs/distributed.md), stripped of spaces."""
    return {name: os.environ[name].strip() for name in TORCHRUN_VARIABLES if os.getenv(name, "").strip()}


def is_torchrun_worker() -> bool:
    """LOCAL_RANK is set by torchrun in each worker: such a process trains instead of launching again."""
    return os.getenv("LOCAL_RANK") is not None


def global_rank() -> int:
    """RANK, set by torchrun: this worker's index among all processes of the job (0 outside torchrun)."""
    return int(os.getenv("RANK", "0"))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1 (huggingface_hub's own variable): never try the hub."""
    return _flag("HF_HUB_OFFLINE")


def cache_dir() -> str:
    """LLAMAFACTORY_CACHE: where converted models are kept (default ~/.cache/llamafactory)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llamafactory")
    return os.getenv("LLAMAFACTORY_CACHE", default)


MEDIA_PLACEHOLDERS = {"images": ("IMAGE_PLACEHOLDER", "<image>"), "videos": ("VIDEO_PLACEHOLDER", "<video>"),
                      "audios": ("AUDIO_PLACEHOLDER", "<audio>")}


def media_placeholders() -> dict[str, str]:
    """IMAGE_PLACEHOLDER / VIDEO_PLACEHOLDER / AUDIO_PLACEHOLDER: the text that stands for one image / video /
    audio in a message (defaults `<image>`, `<video>`, `<audio>`), keyed "images", "videos", "audios"."""
    return {kind: os.getenv(name) or default for kind, (name, default) in MEDIA_PLACEHOLDERS.items()}


# oneDNN (and PyTorch's ideep layer above it) keep every bf16 matmul kernel they build, keyed by shape, up to
# 1,024 each, with buffers of their own. Padding-free and padded batches change shape at every step, so on a CPU
# a bf16 run's memory grows step after step until those caches fill: on SmolLM2-135M, 12 LoRA steps peaked at
# 1.69 GiB with 1,024 entries and 1.32 GiB with 128, full fine-tuning at 3.92 and 3.53 GiB, at the same speed
# (benchmarks/cache_memory.py). 128 entries hold several micro-batches' kernels, so no step rebuilds its own
# (with no cache at all, training ran 3x slower); a user's own setting wins.
CPU_KERNEL_CACHE = "128"


def bound_cpu_kernel_caches() -> None:
    """ONEDNN_PRIMITIVE_CACHE_CAPACITY and LRU_CACHE_CAPACITY default to 128 (from 1,024) for the processes
    `lmf` starts; set either to change it. Must run before torch builds its first kernel."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", CPU_KERNEL_CACHE)
    os.environ.setdefault("LRU_CACHE_CAPACITY", CPU_KERNEL_CACHE)
