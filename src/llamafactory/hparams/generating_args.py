"""Decoding settings used by chat, the API and prediction."""

from dataclasses import asdict, dataclass
from typing import Any

from .fields import arg


@dataclass
class GeneratingArguments:
    do_sample: bool = arg(True, "Sample instead of greedy decoding.")
    temperature: float = arg(0.95, "Sampling temperature.")
    top_p: float = arg(0.7, "Nucleus sampling share.")
    top_k: int = arg(50, "Top-k sampling.")
    num_beams: int = arg(1, "Beam search width.")
    max_length: int = arg(1024, "Longest prompt plus answer (ignored when max_new_tokens is set).")
    max_new_tokens: int = arg(1024, "Most tokens to generate.")
    repetition_penalty: float = arg(1.0, "Penalty for repeated tokens.")
    length_penalty: float = arg(1.0, "Beam search length penalty.")
    skip_special_tokens: bool = arg(True, "Drop special tokens from decoded text.")

    def to_dict(self) -> dict[str, Any]:
        """Keyword arguments for `generate`; max_new_tokens wins over max_length as in LlamaFactory."""
        args = asdict(self)
        args.pop("skip_special_tokens")
        if args.get("max_new_tokens", -1) > 0:
            args.pop("max_length")
        else:
            args.pop("max_new_tokens")
        if not args["do_sample"]:
            for key in ("temperature", "top_p", "top_k"):
                args.pop(key)
        return args
