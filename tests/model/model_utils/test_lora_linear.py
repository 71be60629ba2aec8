"""The fused LoRA layer (peft's LoRA linear whose update is one addmm into the base output) must give peft's
outputs and gradients, train along the same loss curve, save an adapter stock peft loads, and leave every case
it does not cover to peft's own forward."""

from unittest import mock

from llamafactory.model.adapter import init_adapter
from llamafactory.model.model_utils import lora_linear
from tests.model.test_adapter import MODEL_ARGS, ft_args

IDS = [[5, 17, 42, 8, 99, 23, 61, 7, 12, 30, 44, 3], [9, 14, 77, 2, 58, 31, 6, 90, 11, 25, 40, 19]]


def lora_model(model_dir, fused, dtype="float32", **lora):
    """A tiny Llama with LoRA on every linear layer; B starts random so the update is not zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, **lora)
    if fused:
        lora_linear.register(config)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, config)
    for param in peft_model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return peft_model


def fused_layers(model):
    return [m for m in model.modules() if type(m).__name__ == "FusedLoraLinear"]


def peft_forward_calls():
    """Counts calls of peft's own LoRA linear forward (which the fused layer calls only to fall back)."""
    from peft.tuners.lora.layer import Linear

    return mock.patch.object(Linear, "forward", autospec=True, side_effect=Linear.forward)


def run(model, autocast=False, seed=0):
    import torch

    torch.manual_seed(seed)
    ids = torch.tensor(IDS)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.logits.float().detach(), out.loss.item(), grads


def test_fused_layer_gives_peft_outputs_and_gradients(tiny_model_dir):
    import torch

    stock, fused = lora_model(tiny_model_dir, False), lora_model(tiny_model_dir, True)
    assert len(fused_layers(fused)) == 14 and not fused_layers(stock)  # 7 linear layers x 2 blocks
    assert all(torch.equal(a, b) for a, b in zip(stock.state_dict().values(), fused.state_dict().values()))
    with peft_forward_calls() as calls:
        logits, loss, grads = run(fused)
        assert calls.call_count == 0  # the fused path ran, not peft's
        ref_logits, ref_loss, ref_grads = run(stock)
        assert calls.call_count == 14  # once per adapted layer
    assert grads.keys() == ref_grads.keys() and len(grads) == 28 and all("lora_" in n for n in grads)
    assert abs(loss - ref_loss) < 1e-5
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6)


def test_under_bf16_autocast_the_fused_layer_is_as_close_to_fp32_as_peft(tiny_model_dir):
    """bf16 rounding differs (the fused kernel rounds the update once, peft three times), so both are measured
    against the fp32 result: the fused layer's error must not be larger than peft's."""

    exact_logits, exact_loss, exact_grads = run(lora_model(tiny_model_dir, False))
    errors = {}
    for fused in (False, True):
        model = lora_model(tiny_model_dir, fused, "bfloat16")
        with peft_forward_calls() as calls:
            logits, loss, grads = run(model, autocast=True)
        assert calls.call_count == (0 if fused else 14)
        grad_error = [((g - exact_grads[n]).norm() / exact_grads[n].norm()).item() for n, g in grads.items()]
        errors[fused] = (abs(loss - exact_loss), (logits - exact_logits).abs().max().item(),
                         sum(grad_error) / len(grad_error))
    assert errors[True] != errors[False]
    assert errors[True][0] < 0.01 * exact_loss and errors[True][2] < 0.1
    assert all(mine <= 1.5 * theirs for mine, theirs in zip(errors[True], errors[False])), errors


def test_dropout_masks_are_drawn_as_peft_draws_them(tiny_model_dir):
    import torch

    stock = lora_model(tiny_model_dir, False, lora_dropout=0.3)
    fused = lora_model(tiny_model_dir, True, lora_dropout=0.3)
    stock.train(), fused.train()
    with peft_forward_calls() as calls:
        logits, _, grads = run(fused, seed=3)
    assert calls.call_count == 0
    ref_logits, _, ref_grads = run(stock, seed=3)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits, run(fused, seed=4)[0])  # dropout is live
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6)


def test_cases_the_fused_path_does_not_cover_run_peft_forward(tiny_model_dir):
    import torch

    ids = torch.tensor(IDS)
    stock, fused = lora_model(tiny_model_dir, False), lora_model(tiny_model_dir, True)
    with torch.no_grad():
        base = fused.get_base_model()
        with peft_forward_calls() as calls, fused.disable_adapter():
            disabled = fused(input_ids=ids).logits
        assert calls.call_count == 14
        with stock.disable_adapter():
            torch.testing.assert_close(disabled, stock(input_ids=ids).logits)
        assert not torch.allclose(disabled, fused(input_ids=ids).logits)

        fused.merge_adapter(), stock.merge_adapter()
        with peft_forward_calls() as calls:
            merged = fused(input_ids=ids).logits
        assert calls.call_count == 14
        torch.testing.assert_close(merged, stock(input_ids=ids).logits)
        assert base is fused.get_base_model()

    dora_stock = lora_model(tiny_model_dir, False, use_dora=True)
    dora_fused = lora_model(tiny_model_dir, True, use_dora=True)
    with peft_forward_calls() as calls:
        logits, _, grads = run(dora_fused)
    assert calls.call_count == 14
    ref_logits, _, ref_grads = run(dora_stock)
    assert torch.equal(logits, ref_logits) and all(torch.equal(g, ref_grads[n]) for n, g in grads.items())

    zero3 = lora_model(tiny_model_dir, True)
    for layer in fused_layers(zero3):  # as DeepSpeed marks a partitioned parameter
        layer.lora_B["default"].weight.ds_id = 0
    with peft_forward_calls() as calls:
        run(zero3)
    assert calls.call_count == 14


def test_a_fused_adapter_saves_and_loads_in_stock_peft(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    fused, stock = lora_model(tiny_model_dir, True), lora_model(tiny_model_dir, False)
    fused.save_pretrained(tmp_path / "fused")
    stock.save_pretrained(tmp_path / "stock")
    assert "custom" not in (tmp_path / "fused" / "adapter_config.json").read_text()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "fused"))
    assert len(fused_layers(fused)) == 14 and not fused_layers(loaded)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, fused(input_ids=ids).logits)


def test_init_adapter_uses_the_fused_layer_for_new_and_resumed_adapters(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    load = lambda: AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)  # noqa: E731
    model = init_adapter(load(), MODEL_ARGS, ft_args(), is_trainable=True)
    assert len(fused_layers(model)) == 14
    model.save_pretrained(tmp_path / "adapter")
    resumed = init_adapter(load(), MODEL_ARGS.__class__(adapter_name_or_path=str(tmp_path / "adapter")), ft_args(),
                           is_trainable=True)
    assert len(fused_layers(resumed)) == 14
    assert any(p.requires_grad for n, p in resumed.named_parameters() if "lora_A" in n)
    oft = init_adapter(load(), MODEL_ARGS, ft_args(finetuning_type="oft", oft_block_size=16), is_trainable=True)
    assert not fused_layers(oft)


def test_training_follows_the_same_loss_curve_with_the_fused_layer(tiny_model_dir):
    """Both bf16 curves are held against the fp32 one. Plain SGD, since Adam's first steps move each weight by
    about lr times the sign of its gradient, so a rounding difference in a near-zero gradient becomes a full step
    and two bf16 curves drift apart by chance (a few percent here, either one ahead)."""
    import torch

    def curve(fused, dtype="bfloat16"):
        model = lora_model(tiny_model_dir, fused, dtype)
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=3.0)
        ids = torch.tensor(IDS)
        losses = []
        for _ in range(20):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    exact, on, off = curve(True, "float32"), curve(True), curve(False)
    assert on != off  # the fused kernel really ran (it rounds once where peft rounds three times)
    assert on[-1] < 0.95 * on[0] and off[-1] < 0.95 * off[0]  # both learned (random ids: slowly, as LoRA)
    drift = lambda losses: max(abs(a - b) / b for a, b in zip(losses, exact))  # noqa: E731
    assert drift(on) < 0.02 and drift(off) < 0.02


def single_layer(fused, bias=True, **lora):
    """One adapted linear layer (with a bias, unlike the tiny Llama's)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=bias))
    config = LoraConfig(target_modules=["0"], r=2, init_lora_weights=False, **lora)
    if fused:
        lora_linear.register(config)
    return get_peft_model(model, config)


def test_the_update_is_one_addmm_on_the_2d_output_with_bias_any_input_layout_and_checkpointing():
    import torch
    from torch.utils.checkpoint import checkpoint

    stock, fused = single_layer(False), single_layer(True)
    x = torch.randn(3, 4, 8)
    for inputs in (x, x.transpose(0, 1), x[0]):  # 3-D, non-contiguous, 2-D
        outs = []
        for model in (stock, fused):
            leaf = inputs.clone().requires_grad_()
            out = checkpoint(model, leaf, use_reentrant=False)
            out.pow(2).sum().backward()
            outs.append([out, leaf.grad] + [p.grad.clone() for p in model.parameters() if p.requires_grad])
            model.zero_grad()
        for mine, reference in zip(outs[1], outs[0]):
            torch.testing.assert_close(mine, reference)
    out = fused(torch.randn(2, 5, 8, requires_grad=True))
    assert type(out.grad_fn).__name__ == "ViewBackward0"
    assert [type(f).__name__ for f, _ in out.grad_fn.next_functions] == ["AddmmBackward0"]  # no CopySlices
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), stock(x))


def test_hooks_quantised_or_transposed_layers_and_other_cases_go_to_peft():
    import pickle

    import torch

    x = torch.randn(2, 8)
    stock, fused = single_layer(False), single_layer(True)
    layer = fused.base_model.model[0]
    assert type(pickle.loads(pickle.dumps(layer))) is type(layer)

    # enable_input_require_grads-style hook: the base output is a leaf that requires grad
    hooked = [single_layer(flag) for flag in (False, True)]
    for model in hooked:
        model.base_model.model[0].base_layer.register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    with peft_forward_calls() as calls:
        out = hooked[1](x)
    assert calls.call_count == 1
    torch.testing.assert_close(out, hooked[0](x))

    # the same through a global hook, which the layer cannot see: the leaf output is added to, not updated in place
    def make_leaf(module, inputs, output):
        return output.detach().requires_grad_(True) if isinstance(module, torch.nn.Linear) else output

    leafy = single_layer(True)
    handle = torch.nn.modules.module.register_module_forward_hook(make_leaf)
    try:
        out = leafy(x)
    finally:
        handle.remove()
    torch.testing.assert_close(out, hooked[0](x))
    assert out.grad_fn is not None

    # a hooked B (FSDP1 wraps it as its own unit; ZeRO-3 hooks it)
    layer.lora_B["default"].register_forward_pre_hook(lambda m, i: None)
    with peft_forward_calls() as calls:
        out = fused(x)
    assert calls.call_count == 1
    torch.testing.assert_close(out, stock(x))

    for fallback in (single_layer(True, lora_bias=True), single_layer(True, fan_in_fan_out=True)):
        with peft_forward_calls() as calls:
            fallback(x)
        assert calls.call_count == 1

    # mixed dtypes outside autocast: peft's casting and promotion apply
    mixed = single_layer(True)
    mixed.base_model.model[0].base_layer.to(torch.bfloat16)
    with peft_forward_calls() as calls:
        out = mixed(x.bfloat16())
    assert calls.call_count == 1 and out.dtype == torch.bfloat16
