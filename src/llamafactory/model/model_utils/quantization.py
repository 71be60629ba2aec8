"""On-the-fly quantization of the base model (QLoRA): bitsandbytes 4/8-bit, which also runs on CPU, and
hqq / eetq where their packages are installed."""

import importlib.util
from typing import Any

from ...extras.errors import ConfigError, UserError
from ...extras.logging import get_logger

logger = get_logger(__name__)

PACKAGES = {"bnb": "bitsandbytes", "bitsandbytes": "bitsandbytes", "hqq": "hqq", "eetq": "eetq"}


def quantization_kwargs(model_args: Any, compute_dtype: Any) -> dict[str, Any]:
    """`from_pretrained` arguments that quantize the weights while they load (empty when not asked)."""
    bits = model_args.quantization_bit
    if bits is None:
        return {}
    method = model_args.quantization_method
    package = PACKAGES[method]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"`quantization_bit` with quantization_method {method} needs the {package} package: "
                        f"`pip install {package}`")
    if method in ("bnb", "bitsandbytes"):
        from transformers import BitsAndBytesConfig

        if bits == 4:
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype,
                                        bnb_4bit_quant_type=model_args.quantization_type,
                                        bnb_4bit_use_double_quant=model_args.double_quantization,
                                        bnb_4bit_quant_storage=compute_dtype)
        elif bits == 8:
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            raise ConfigError(f"`quantization_bit` must be 4 or 8 with bitsandbytes, got {bits}")
    elif method == "hqq":
        from transformers import HqqConfig

        if bits not in (1, 2, 3, 4, 5, 6, 8):
            raise ConfigError(f"`quantization_bit` {bits} is not an hqq bit width (1-6 or 8)")
        config = HqqConfig(nbits=bits, quant_zero=False, quant_scale=False, axis=0)
    else:
        from transformers import EetqConfig

        if bits != 8:
            raise ConfigError(f"eetq quantizes to 8 bits only, got quantization_bit {bits}")
        config = EetqConfig()
    logger.info("Quantizing the base model to %d bits with %s.", bits, method)
    return {"quantization_config": config, "device_map": model_args.quantization_device_map or _device_map()}


def _device_map() -> Any:
    import torch

    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
