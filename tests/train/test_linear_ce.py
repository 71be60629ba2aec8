"""The chunked linear cross-entropy equals the materialised one: loss and the hidden states' gradient over several
chunks, in fp32 and under bf16 autocast (as the standard head would run), for a frozen head with a bias."""

import pytest

from llamafactory.train import linear_ce


def _reference(hidden, weight, bias, targets):
    import torch

    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_loss_and_gradients_equal_the_materialised_ones(monkeypatch, autocast):
    import torch

    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows per chunk over a 50-token vocabulary
    torch.manual_seed(0)
    rows, width, vocab = 30, 16, 50
    results = []
    for fn in (_reference, linear_ce.linear_cross_entropy_sum):
        hidden = torch.randn(rows, width, generator=torch.Generator().manual_seed(1)).requires_grad_()
        weight = torch.randn(vocab, width, generator=torch.Generator().manual_seed(2))
        bias = torch.randn(vocab, generator=torch.Generator().manual_seed(3))
        targets = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(4))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(hidden, weight, bias, targets)
        assert loss.dtype == torch.float32
        (loss * 0.25).backward()  # the scale of gradient accumulation reaches every gradient
        results.append((loss.detach(), hidden.grad.clone()))
    (ref_loss, ref_grad), (loss, grad) = results
    tol = {"rtol": 2e-2, "atol": 2e-2} if autocast else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(loss, ref_loss, **tol)
    assert grad.dtype == ref_grad.dtype
    torch.testing.assert_close(grad, ref_grad, **tol)


def test_a_trainable_head_is_refused():
    import torch

    head = torch.nn.Linear(4, 10)
    with pytest.raises(ValueError, match="frozen head"):
        linear_ce.linear_cross_entropy_sum(torch.randn(3, 4), head.weight, head.bias, torch.tensor([1, 2, 3]))


def test_plain_linear_head_refuses_wrapped_heads():
    import torch

    class Model(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def get_output_embeddings(self):
            return self.head

    class Wrapped(torch.nn.Linear):
        pass

    plain = torch.nn.Linear(4, 10, bias=False).requires_grad_(False)
    assert linear_ce.plain_linear_head(Model(plain)) is plain
    assert linear_ce.plain_linear_head(Model(torch.nn.Linear(4, 10))) is None  # it trains: the standard loss
    wrapped = Wrapped(4, 10).requires_grad_(False)  # an adapter or quantised subclass
    assert linear_ce.plain_linear_head(Model(wrapped)) is None
    assert linear_ce.plain_linear_head(Model(torch.nn.Identity())) is None
