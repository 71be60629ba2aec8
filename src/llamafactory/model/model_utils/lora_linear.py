"""A LoRA linear layer whose update is one fused matmul-add into the base layer's output.

peft's LoRA forward computes `result + lora_B(lora_A(dropout(x))) * scaling`: the scaling multiply and the add
each read and write a tensor of the layer's full output size, and the multiply's backward does so again. On a
small model trained on a CPU these passes over memory are a few percent of a step (seven adapted layers per
block, each run in the forward, the checkpoint recompute and the backward). Here the same update is
`result.addmm_(lora_A(dropout(x)), B.T, alpha=scaling)`: one matmul kernel that scales and accumulates into the
base output, whose backward scales only rank-sized tensors.

The layer is peft's own `lora.Linear` (same parameters, state dict, merging and saving), registered through
peft's custom-module hook, and anything other than the plain case (several or disabled adapters, merged
weights, DoRA and other variants, a LoRA bias, mixed dtypes outside autocast, DeepSpeed ZeRO-3, whose hooks
gather B only when lora_B itself runs) runs peft's forward unchanged.
"""

from typing import Any


def _layer_class() -> type:
    import torch
    from peft.tuners.lora.layer import Linear

    class FusedLoraLinear(Linear):
        """peft's LoRA linear with a fused forward for one plain adapter (see the module docstring)."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            active = self.active_adapters
            if args or kwargs or self.disable_adapters or self.merged or len(active) != 1:
                return super().forward(x, *args, **kwargs)
            name = active[0]
            if name not in self.lora_A or name in self.lora_variant or self.lora_B[name].bias is not None:
                return super().forward(x, *args, **kwargs)
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            if hasattr(lora_b.weight, "ds_id"):  # ZeRO-3 gathers B only inside lora_B's own forward
                return super().forward(x, *args, **kwargs)
            autocast = torch.is_autocast_enabled(x.device.type)
            if not autocast and not (x.dtype == lora_a.weight.dtype == lora_b.weight.dtype):
                return super().forward(x, *args, **kwargs)  # peft's input casting and dtype promotion apply
            result = self.base_layer(x)
            hidden = lora_a(self.lora_dropout[name](x))
            if hidden.dtype != result.dtype or not result.is_contiguous():
                return result + lora_b(hidden) * self.scaling[name]
            weight_b = lora_b.weight.to(result.dtype)  # autocast does not reach in-place ops: cast as it would
            out = result.view(-1, result.shape[-1])
            out.addmm_(hidden.reshape(-1, hidden.shape[-1]), weight_b.t(), alpha=self.scaling[name])
            return result

    return FusedLoraLinear


_CLASS: list[type] = []


def dispatch_fused_lora(target: Any, adapter_name: str, config: Any, **kwargs: Any) -> Any:
    """peft custom-module dispatcher: a FusedLoraLinear for a plain `torch.nn.Linear`, None (peft's own
    dispatchers then decide) for anything else, quantised and parameter-targeted layers included."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if type(base) is not torch.nn.Linear or kwargs.get("parameter_name") or kwargs.get("fan_in_fan_out"):
        return None
    if not _CLASS:
        _CLASS.append(_layer_class())
    return _CLASS[0](target, adapter_name, config=config, **kwargs)


def register(config: Any) -> Any:
    """Route a LoraConfig's plain linear layers to the fused layer; returns the config."""
    import torch

    config._register_custom_module({torch.nn.Linear: dispatch_fused_lora})
    return config
