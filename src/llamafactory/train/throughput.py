"""How healthy a run is: effective (non-padding) tokens per second, padding share, and the model FLOP/s
achieved as a share of this machine's own measured matmul peak.

FLOPs per trained token = 4·N + 2·T, where N counts the weights that take part in matmuls (all parameters
except the input embedding table) and T the trainable ones: 2·N for the forward pass, 2·N to carry
gradients back through the activations, and 2·T for the weight gradients. Full fine-tuning gives the
familiar 6·N; a LoRA run on a frozen base gives about 4·N. Attention-score FLOPs are not counted.
"""

import time
from typing import Any


def matmul_peak(dtype: Any, size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul in `dtype` on this device, measured now (best of a short burst)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = 0.0
    torch.matmul(a, b)  # warm-up (a first bf16 call may take longer than the whole burst: kernels are built)
    deadline = time.perf_counter() + seconds
    while best == 0.0 or time.perf_counter() < deadline:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def flops_per_token(model: Any) -> float:
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embedding_ids = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output is not None and embedding is not None and output.weight is embedding.weight
    total = sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids or tied)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4.0 * total + 2.0 * trainable


def count_tokens(inputs: dict[str, Any], pad_token_id: int | None) -> tuple[int, int]:
    """(real tokens, computed positions) in a batch."""
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int(mask.sum()), mask.numel()
    # Neat packing sends no 2-D mask: padding is the run of pad tokens with ignored labels at each row's end.
    labels = inputs.get("labels")
    real = 0
    for row in range(ids.shape[0]):
        length = ids.shape[1]
        while length and ids[row, length - 1] == pad_token_id and (labels is None or labels[row, length - 1] < 0):
            length -= 1
        real += length
    return real, ids.numel()


class ThroughputMeter:
    """Counts tokens between steps and turns them into the figures a run reports."""

    def __init__(self) -> None:
        self.real = 0
        self.total = 0
        self.start: float | None = None

    def add(self, real: int, total: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        self.real += real
        self.total += total

    def elapsed(self) -> float:
        return time.perf_counter() - self.start if self.start is not None else 0.0

    def tokens_per_second(self) -> float:
        elapsed = self.elapsed()
        return self.real / elapsed if elapsed > 0 else 0.0

    def padding_share(self) -> float:
        return 1 - self.real / self.total if self.total else 0.0
