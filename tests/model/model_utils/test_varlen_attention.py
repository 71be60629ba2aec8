"""Padding-free attention on a CPU: short bf16 examples take two matmuls around an fp32 softmax instead of
sdpa's flash kernel (its backward is slow there); the result must be sdpa's, up to bf16 rounding, and training
must follow the same loss curve with the lever on and off."""

from types import SimpleNamespace

import pytest

from llamafactory.data.collator import build_collator
from llamafactory.data.processor.supervised import SupervisedProcessor
from llamafactory.data.template import get_template
from llamafactory.model.model_utils import varlen_attention
from tests.data.test_collator import ROWS


def qkv(length, dtype, heads=4, kv_heads=2, dim=16, seed=0):
    """[1, heads, length, dim] tensors laid out as a model hands them over (projected, then transposed)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(1, length, h, dim, generator=gen).to(dtype).transpose(1, 2).requires_grad_()  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


def flash(q, k, v):
    import torch

    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


@pytest.mark.parametrize("dim", [16, 24])  # 16**-0.5 is a power of two (scaled on the query), 24**-0.5 is not
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_matmul_attention_gives_sdpa_outputs_and_gradients(dtype, tol, dim):
    import torch

    dtype = getattr(torch, dtype)
    results = []
    for kernel in (flash, varlen_attention.causal_matmul_attention):
        q, k, v = qkv(37, dtype, dim=dim)
        out = kernel(q, k, v)
        out.float().pow(2).sum().backward()
        results.append([out.float(), q.grad.float(), k.grad.float(), v.grad.float()])
    for mine, reference in zip(results[1], results[0]):
        torch.testing.assert_close(mine, reference, rtol=tol, atol=tol)


def test_a_power_of_two_scale_on_the_bf16_query_is_exact():
    """Scaling the bf16 query by 2^-k gives the scores that scaling them in fp32 gives, bit for bit."""
    import torch

    q, k, v = qkv(29, torch.bfloat16, dim=16)
    with torch.no_grad():
        scores = torch.matmul(q.reshape(1, 2, 2 * 29, 16), k.transpose(2, 3)).view(1, 2, 2, 29, 29).float()
        mask = torch.ones(29, 29, dtype=torch.bool).triu(1)
        probs = torch.softmax(scores.mul_(0.25).masked_fill_(mask, float("-inf")), dim=-1).to(torch.bfloat16)
        reference = torch.matmul(probs.view(1, 2, 2 * 29, 29), v).view(1, 4, 29, 16)
        assert torch.equal(varlen_attention.causal_matmul_attention(q, k, v, 0.25), reference)
        assert not torch.equal(varlen_attention.causal_matmul_attention(q, k, v, 0.2), reference)


@pytest.mark.parametrize("extra,stock", [({}, False), ({"softcap": 50.0}, True), ({"position_bias": 0}, True)])
def test_attention_that_needs_the_model_mask_takes_the_stock_function(monkeypatch, extra, stock):
    import torch
    import transformers.integrations.sdpa_attention as sdpa_module

    monkeypatch.setattr(sdpa_module, "sdpa_attention_forward", lambda *args, **kwargs: ("stock", None))
    q, k, v = qkv(18, torch.float32)
    with torch.no_grad():
        out, _ = varlen_attention.sdpa_varlen_forward(SimpleNamespace(is_causal=True), q, k, v, None,
                                                      cu_seq_lens_q=torch.tensor([0, 6, 18]), **extra)
    assert (isinstance(out, str) and out == "stock") is stock


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("window", [4, 64])
def test_sliding_window_stays_inside_each_padding_free_example(dtype, window):
    """Mistral-style sliding windows: a padding-free row gives each example the logits it gets alone, whether
    the window is shorter than the examples (explicit windowed mask) or longer (plain causal paths)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=window)
    model = MistralForCausalLM._from_config(config, attn_implementation="sdpa", dtype=getattr(torch, dtype)).eval()
    first, second = torch.randint(0, 100, (1, 6)), torch.randint(0, 100, (1, 9))
    with torch.no_grad():
        alone = torch.cat([model(input_ids=first).logits, model(input_ids=second).logits], 1).float()
        assert varlen_attention.enable_padding_free(model)
        bounds = torch.tensor([0, 6, 15])
        packed = model(input_ids=torch.cat([first, second], 1), cu_seq_lens_q=bounds, cu_seq_lens_k=bounds,
                       position_ids=torch.cat([torch.arange(6), torch.arange(9)])[None], max_length_q=9,
                       max_length_k=9).logits.float()
    tol = 1e-5 if dtype == "float32" else 5e-2
    torch.testing.assert_close(packed, alone, rtol=tol, atol=tol)


def test_training_follows_the_same_loss_curve_with_the_matmul_path_on_and_off(tiny_model_dir, tiny_tokenizer,
                                                                              monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    args = SimpleNamespace(cutoff_len=256, train_on_prompt=False, mask_history=False, neat_packing=False)
    single = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, args).preprocess(ROWS)
    batch = build_collator(tiny_tokenizer, padding_free=True)([{k: v[i] for k, v in single.items()}
                                                               for i in range(3)])

    def curve(matmul_max):
        monkeypatch.setattr(varlen_attention, "MATMUL_MAX_LEN", matmul_max)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
        assert varlen_attention.enable_padding_free(model)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(8):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    on, off = curve(256), curve(0)
    assert on != off  # the two kernels really ran (bf16 rounding differs)
    assert on[-1] < 0.7 * on[0] and off[-1] < 0.7 * off[0]  # both learned
    assert max(abs(a - b) / b for a, b in zip(on, off)) < 0.03
