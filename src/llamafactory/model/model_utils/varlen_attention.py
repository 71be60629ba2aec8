"""Attention for padding-free batches on kernels without native variable-length support (CPU, sdpa).

A padding-free batch is one row holding several examples back to back, with `cu_seq_lens_q` marking where
each starts. sdpa would need a dense block-diagonal mask over the whole row, costing (sum of lengths)²;
this runs attention once per example, causal, costing the sum of squared lengths. Batches without
`cu_seq_lens_q` (padded batches, generation) go to the stock sdpa function unchanged, so registering it never
changes the result of any other batch.

Per example, sdpa's flash kernel runs with `is_causal=True`, except in bf16 on a CPU for examples up to
MATMUL_MAX_LEN tokens: there the CPU flash kernel's backward is slow (its forward and backward took 1.0x-1.8x
as long as two bf16 matmuls around an fp32 softmax for 16-256 tokens, benchmarks/attention_speed.py), and
sft examples are mostly that short. The matmul path is the textbook attention (scores in bf16 from fp32
accumulation, scaled exactly or in fp32, softmax in fp32), as transformers' eager attention computes it up to
where the scaling rounds; past the crossover and in fp32 the flash kernel is the faster one. In sliding-window
models (Mistral; transformers' own mask for them does not keep packed examples apart), an example longer than
the window gets the window inside it.
"""

import math
from typing import Any

NAME = "sdpa_varlen"
# Longest example that takes the matmul path (bf16 on a CPU): below the measured crossover with flash.
MATMUL_MAX_LEN = 256


def sdpa_varlen_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                        scaling: float | None = None, is_causal: bool | None = None,
                        **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or query.shape[2] == 1 or is_causal is False \
            or not getattr(module, "is_causal", True) or _needs_the_mask(kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = bounds.tolist() if isinstance(bounds, torch.Tensor) else list(bounds)
    # split, not slicing: the backward of a split is one concatenation, while each slice's backward would
    # zero-fill a gradient as large as the whole row
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    rest = query.shape[2] - bounds[-1]
    if rest > 0:  # positions past the last boundary belong to no example: attend within themselves, unused
        sizes.append(rest)
    gqa = key.shape[1] != query.shape[1]
    # bf16 either way: weights loaded in bf16, or fp32 ones under autocast (whose RoPE can promote q and k to fp32)
    bf16 = query.dtype == torch.bfloat16 or (query.dtype == torch.float32 and torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    matmul_max = MATMUL_MAX_LEN if query.device.type == "cpu" and bf16 and not dropout else 0
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)

    def attend(q: Any, k: Any, v: Any) -> Any:
        length = q.shape[2]
        if window and length > window:  # each token sees itself and the window - 1 before it
            pos = torch.arange(length, device=q.device)
            allowed = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout,
                                                                    scale=scaling, enable_gqa=gqa)
        if length <= matmul_max:
            return causal_matmul_attention(q, k, v, scaling, torch.bfloat16)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                                is_causal=True, enable_gqa=gqa)

    pieces = [attend(q, k, v) for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2))
              if q.shape[2]]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _needs_the_mask(kwargs: dict[str, Any]) -> bool:
    """Attention variants that per-example causal attention would silently drop (logit soft-capping, attention
    sinks, an additive position bias): those batches take the stock function and the model's own mask. No sdpa
    model of transformers 5.24 passes them (Gemma2 and gpt-oss have no sdpa); this keeps a future one correct."""
    return bool(kwargs.get("softcap")) or kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None


def causal_matmul_attention(query: Any, key: Any, value: Any, scaling: float | None = None,
                            dtype: Any = None) -> Any:
    """Causal attention of one example ([1, heads, length, dim]) as two matmuls in `dtype` (default: the
    query's) around an fp32 softmax. Query heads that share a key/value head (GQA) are stacked into one matmul
    against it, so keys and values are never repeated."""
    import torch

    dtype = dtype or query.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    # built per call (microseconds): a cached one made under inference_mode could not be saved for backward
    mask = torch.ones(length, length, dtype=torch.bool, device=query.device).triu_(1)
    scale = dim**-0.5 if scaling is None else scaling
    query = query.reshape(batch, kv_heads, group * length, dim)
    if scale > 0 and math.frexp(scale)[0] == 0.5:  # a power of two (head dim 64, 256): exact on the bf16 query
        scores = torch.matmul(query * scale, key.transpose(2, 3)).view(batch, kv_heads, group, length, length)
        scores = torch.softmax(scores.masked_fill_(mask, float("-inf")), dim=-1, dtype=torch.float32)
    else:  # scaled in fp32, as the flash kernel does
        scores = torch.matmul(query, key.transpose(2, 3)).view(batch, kv_heads, group, length, length).float()
        scores = torch.softmax(scores.mul_(scale).masked_fill_(mask, float("-inf")), dim=-1)
    probs = scores.to(dtype).view(batch, kv_heads, group * length, length)
    return torch.matmul(probs, value).view(batch, heads, length, dim)


def register() -> str:
    """Make `attn_implementation="sdpa_varlen"` available to transformers models; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_varlen_forward)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def enable_padding_free(model: Any) -> bool:
    """Point the model's attention at a kernel that keeps padding-free examples apart cheaply; False when only
    a dense block mask would (eager attention, or a model without the attention interface)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = getattr(base.config, "_attn_implementation", None) or ""
    if current.startswith("flash_attention") or current == NAME:
        return True
    if current != "sdpa" or not hasattr(base, "set_attn_implementation"):
        return False
    register()
    base.set_attn_implementation(NAME)
    return True
