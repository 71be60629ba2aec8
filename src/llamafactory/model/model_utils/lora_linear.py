"""A LoRA linear layer whose update is one fused matmul-add into the base layer's output.

peft's LoRA forward computes `result + lora_B(lora_A(dropout(x))) * scaling`: the scaling multiply and the add
each read and write a tensor of the layer's full output size, and the multiply's backward does so again. On a
small model trained on a CPU these passes over memory are a few percent of a step (seven adapted layers per
block, each run in the forward, the checkpoint recompute and the backward). Here the same update is
`result.addmm_(lora_A(dropout(x)), B.T, alpha=scaling)` on the 2-D base output (not a view of it, which would
make autograd copy the whole output gradient back and forth): one matmul kernel that scales and accumulates
into the base output, whose backward scales only rank-sized tensors.

The layer is peft's own `lora.Linear` (same parameters, state dict, merging and saving), registered through
peft's custom-module hook, and anything other than the plain case runs peft's forward unchanged: several or
disabled adapters, merged weights, DoRA and other variants, a LoRA bias, mixed dtypes outside autocast, hooks
on the base layer or on B (FSDP1 wraps B as its own unit and DeepSpeed ZeRO-3 hooks it: both gather B's weight
only when lora_B itself runs).
"""

from typing import Any


def _layer_class() -> type:
    import torch
    from peft.tuners.lora.layer import Linear

    class FusedLoraLinear(Linear):
        """peft's LoRA linear with a fused forward for one plain adapter (see the module docstring)."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if args or kwargs or not self._fusable():
                return super().forward(x, *args, **kwargs)
            name = self.active_adapters[0]
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            autocast = torch.is_autocast_enabled(x.device.type)
            if not autocast and not (x.dtype == lora_a.weight.dtype == lora_b.weight.dtype):
                return super().forward(x, *args, **kwargs)  # peft's input casting and dtype promotion apply
            rows = x.reshape(-1, x.shape[-1])  # 2-D, so the in-place update is not on a view (no CopySlices)
            result = self.base_layer(rows)
            hidden = lora_a(self.lora_dropout[name](rows))
            if hidden.dtype != result.dtype or (result.requires_grad and result.grad_fn is None):
                # a global forward hook made the base output a leaf (local hooks are refused above): add to it
                result = result + (lora_b(hidden) * self.scaling[name]).to(result.dtype)
            else:
                weight_b = lora_b.weight.to(result.dtype)  # autocast does not reach in-place ops: cast as it would
                result.addmm_(hidden, weight_b.t(), alpha=self.scaling[name])
            return result.view(*x.shape[:-1], result.shape[-1])

        def _fusable(self) -> bool:
            """One plain adapter whose B is an ordinary, unhooked linear layer, on an unhooked base layer."""
            active = self.active_adapters
            if self.disable_adapters or self.merged or len(active) != 1 or active[0] not in self.lora_A:
                return False
            name = active[0]
            lora_b = self.lora_B[name]
            # FSDP1 wraps lora_B as its own unit and ZeRO-3 hooks it: either gathers B only when lora_B runs.
            return (name not in self.lora_variant and type(lora_b) is torch.nn.Linear and lora_b.bias is None
                    and type(lora_b.weight) is torch.nn.Parameter and not hasattr(lora_b.weight, "ds_id")
                    and not (lora_b._forward_hooks or lora_b._forward_pre_hooks)
                    and not (self.base_layer._forward_hooks or self.base_layer._forward_pre_hooks))

    FusedLoraLinear.__module__, FusedLoraLinear.__qualname__ = __name__, "FusedLoraLinear"  # picklable
    return FusedLoraLinear


_CLASS: list[type] = []


def fused_class() -> type:
    """The FusedLoraLinear class, made on first use (peft and torch are imported only then)."""
    if not _CLASS:
        _CLASS.append(_layer_class())
    return _CLASS[0]


def __getattr__(name: str) -> Any:
    if name == "FusedLoraLinear":  # where pickle looks the class up
        return fused_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dispatch_fused_lora(target: Any, adapter_name: str, config: Any, **kwargs: Any) -> Any:
    """peft custom-module dispatcher: a FusedLoraLinear for a plain `torch.nn.Linear` with an ordinary weight;
    None (peft's own dispatchers then decide) for anything else: quantised layers (bitsandbytes, torchao's
    tensor-subclass weights), parameter-targeted layers and `fan_in_fan_out`, which peft corrects for nn.Linear."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if type(base) is not torch.nn.Linear or type(base.weight) is not torch.nn.Parameter:
        return None
    if kwargs.get("parameter_name") or kwargs.get("fan_in_fan_out") or getattr(config, "fan_in_fan_out", False):
        return None
    return fused_class()(target, adapter_name, config=config, **kwargs)


def register(config: Any) -> Any:
    """Route a LoraConfig's plain linear layers to the fused layer; returns the config."""
    import torch

    config._register_custom_module({torch.nn.Linear: dispatch_fused_lora})
    return config
