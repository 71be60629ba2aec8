"""Attention for padding-free batches on kernels without native variable-length support (CPU, sdpa).

A padding-free batch is one row holding several examples back to back, with `cu_seq_lens_q` marking where
each starts. sdpa would need a dense block-diagonal mask over the whole row, costing (sum of lengths)²;
this runs sdpa once per example with `is_causal=True`, costing the sum of squared lengths and taking the
kernel's causal fast path. Batches without `cu_seq_lens_q` (padded batches, generation) go to the stock
sdpa function unchanged, so registering it never changes the result of any other batch.
"""

from typing import Any

NAME = "sdpa_varlen"


def sdpa_varlen_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                        scaling: float | None = None, is_causal: bool | None = None,
                        **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or query.shape[2] == 1 or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = bounds.tolist() if isinstance(bounds, torch.Tensor) else list(bounds)
    gqa = key.shape[1] != query.shape[1]
    # split, not slicing: the backward of a split is one concatenation, while each slice's backward would
    # zero-fill a gradient as large as the whole row
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    rest = query.shape[2] - bounds[-1]
    if rest > 0:  # positions past the last boundary belong to no example: attend within themselves, unused
        sizes.append(rest)
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True,
                                                         enable_gqa=gqa)
        for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2)) if q.shape[2]
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


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
