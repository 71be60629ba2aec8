"""Cross-entropy of a linear LM head computed a chunk of rows at a time, without keeping the logits.

The usual loss materialises fp32 logits for every labelled token (rows x vocabulary, then a log-softmax of the
same size and its gradient): with a 49k-152k vocabulary that is the largest tensor of a small model's step.
Here each chunk's logits live only inside the forward pass: the loss's gradient with respect to the logits is
known there (softmax minus the one-hot target), so the gradient for the hidden states is taken at once and only
it is kept for backward. Matmuls run in the dtype the standard head would use (autocast's, or the hidden
states'), the softmax in fp32, as in the standard loss.

Only for a head that does not train (LoRA, freeze): with a trainable head the weight's gradient, a fp32
vocabulary x hidden matrix, would have to be summed over the chunks and held from forward to backward, which in
full fine-tuning measured slower and larger than the standard loss.
"""

from typing import Any

# Rows per chunk = this many logits / vocabulary size: 8M fp32 logits = 32 MB per chunk, whatever the vocabulary.
CHUNK_ELEMENTS = 8 * 1024 * 1024


def _function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, dtype: Any) -> Any:
            rows, vocab = hidden.shape[0], weight.shape[0]
            chunk = max(1, CHUNK_ELEMENTS // vocab)
            w = weight.detach().to(dtype)
            b = bias.detach().to(dtype) if bias is not None else None
            grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            with torch.autocast(hidden.device.type, enabled=False):
                for start in range(0, rows, chunk):
                    h = hidden[start:start + chunk].detach().to(dtype)
                    t = targets[start:start + chunk]
                    logits = torch.nn.functional.linear(h, w, b).float()
                    lse = torch.logsumexp(logits, dim=-1)
                    total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                    if grad_hidden is not None:
                        # d(sum of cross-entropies)/d(logits) = softmax - one-hot, built in place of the logits
                        grad = logits.sub_(lse[:, None]).exp_()
                        grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                        grad_hidden[start:start + chunk] = (grad.to(dtype) @ w).to(hidden.dtype)
            ctx.save_for_backward(grad_hidden)
            return total

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> tuple[Any, ...]:
            (grad_hidden,) = ctx.saved_tensors
            grad = grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None
            return grad, None, None, None, None

    return LinearCrossEntropy


_FUNCTION: list[Any] = []


def linear_cross_entropy_sum(hidden: Any, weight: Any, bias: Any, targets: Any, dtype: Any = None) -> Any:
    """Sum over rows of cross_entropy(hidden @ weight.T + bias, targets), as an fp32 scalar, with the matmuls in
    `dtype` (default: autocast's where it is on, else the hidden states'); `targets` holds no ignore index
    (pick the labelled rows first). `weight` and `bias` must not require gradients (see above)."""
    import torch

    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("linear_cross_entropy_sum takes a frozen head; a trainable one needs the standard loss")
    if not _FUNCTION:
        _FUNCTION.append(_function())
    if dtype is None:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    return _FUNCTION[0].apply(hidden, weight, bias, targets, dtype)


def plain_linear_head(model: Any) -> Any:
    """The model's output head when it is a plain, whole, frozen nn.Linear (not an adapter wrapper, not
    quantised, not sharded by ZeRO-3/FSDP, not trained); None otherwise."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(base, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    if type(head) is not torch.nn.Linear:
        return None
    weight = head.weight
    if weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return None
    if not weight.is_floating_point() or weight.dim() != 2 or weight.numel() != head.in_features * head.out_features:
        return None
    return head
