"""Write a merged model as one llama.cpp GGUF file, in pure Python (the `gguf` package; no llama.cpp build).

Covered: the llama architecture family (Llama, SmolLM2, Mistral, all `llama` in llama.cpp), Qwen2 and Qwen3,
with a byte-level BPE tokenizer (llama.cpp's "gpt2" tokenizer model). Weights keep llama.cpp's names and
layouts: for the `llama` architecture the q/k projections are reordered from the Hugging Face rotary layout
(first half / second half of each head) to llama.cpp's interleaved pairs; Qwen2/Qwen3 use the half layout in
llama.cpp too (NeoX rope) and are written as they are. Anything else is refused with the list of what works.
"""

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...extras.errors import UserError
from ...extras.logging import get_logger

logger = get_logger(__name__)

# Hugging Face model_type -> llama.cpp architecture name.
GGUF_ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
GGUF_TYPES = ("f16", "bf16", "q8_0")
SUPPORTED = "Llama, SmolLM2, Mistral (llama), Qwen2 and Qwen3 with a byte-level BPE tokenizer"


def check_gguf_support(config: Any) -> str:
    """The llama.cpp architecture for this config, or a clear error naming what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in GGUF_ARCHS:
        raise UserError(f"GGUF export does not support model_type `{model_type}`; supported: {SUPPORTED}. "
                        "Export with `export_format: safetensors` and convert with llama.cpp instead")
    return GGUF_ARCHS[model_type]


def rope_rows_to_interleaved(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows of a q or k projection from HF's rotary layout to llama.cpp's.

    HF rotates dimension i of a head with dimension i + d/2; llama.cpp's `llama` rope rotates
    neighbours (2i, 2i + 1). So within each head, row i of the first half goes to 2i and row i of the
    second half to 2i + 1.
    """
    rows = weight.shape[0]
    half = rows // n_head // 2
    by_head = weight.reshape(n_head, 2, half, *weight.shape[1:])  # head, which half, index in half
    return np.ascontiguousarray(by_head.swapaxes(1, 2)).reshape(weight.shape)


def llama3_rope_factors(rope: dict[str, Any], head_dim: int, theta: float) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1-style rope scaling, the `rope_freqs` tensor llama.cpp reads."""
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    original = float(rope["original_max_position_embeddings"])
    divisors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * theta ** (i / head_dim)
        if wavelength < original / high:  # high frequencies: untouched
            divisors.append(1.0)
        elif wavelength > original / low:  # low frequencies: fully scaled
            divisors.append(factor)
        else:  # a smooth blend in between
            blend = (original / wavelength - low) / (high - low)
            divisors.append(1.0 / ((1 - blend) / factor + blend))
    return np.asarray(divisors, dtype=np.float32)


def _rope(config: Any) -> tuple[float, dict[str, Any]]:
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return float(theta), params


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


# ---------------------------------------------------------------------------------------------- tokenizer
def _pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name of the text splitting before BPE, read from tokenizer.json's pre_tokenizer."""
    steps = (pre or {}).get("pretokenizers", [pre or {}])
    kinds = [step.get("type") for step in steps]
    regexes = [str((step.get("pattern") or {}).get("Regex", "")) for step in steps]
    if any(r"\p{N}{1,3}" in r for r in regexes):
        return "llama-bpe"  # Llama 3's split (numbers in groups of up to three)
    if any(r"\p{L}+|\p{N}|" in r for r in regexes):
        return "qwen2"  # Qwen2's split (single digits)
    if "Digits" in kinds and "ByteLevel" in kinds:
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt2"
    logger.warning("GGUF export: unrecognised pre-tokenizer %s; writing `default` (llama.cpp may split text "
                   "slightly differently from the original tokenizer).", kinds)
    return "default"


def tokenizer_metadata(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """Tokens, types, merges and special ids of a byte-level BPE tokenizer, in llama.cpp's terms."""
    from gguf import TokenType

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or "ByteLevel" in json.dumps(spec.get("decoder"))
    if model.get("type") != "BPE" or not byte_level:
        raise UserError(f"GGUF export supports byte-level BPE tokenizers (GPT-2 style, as in Llama 3, Qwen and "
                        f"SmolLM2); this tokenizer is {model.get('type')} without byte-level pre-tokenization. "
                        "Export with `export_format: safetensors` and convert with llama.cpp instead")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise UserError(f"the tokenizer has ids up to {max(by_id)} but the model's embeddings have {vocab_size} rows: "
                        "set `resize_vocab: true` when merging so they match")
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows beyond the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
        elif i in added:
            tokens.append(by_id[i])
            types.append(int(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED))
        else:
            tokens.append(by_id[i])
            types.append(int(TokenType.NORMAL))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return {
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "pre": _pre_tokenizer_name(spec.get("pre_tokenizer")),
        "add_bos": bool(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
    }


# ---------------------------------------------------------------------------------------------- tensors
def _encode(name: str, array: np.ndarray, gguf_type: str) -> tuple[np.ndarray, Any]:
    """(data, raw ggml type or None). 1-D tensors (norms, biases) stay f32, as llama.cpp keeps them."""
    from gguf import GGMLQuantizationType, quants

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 1 or gguf_type == "f32":
        return array, None
    if gguf_type == "bf16":
        return quants.quantize(array, GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    if gguf_type == "q8_0":
        if array.shape[-1] % 32 == 0:  # Q8_0 packs rows in blocks of 32
            return quants.quantize(array, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
        logger.info("GGUF export: %s has rows of %d values (not a multiple of 32); written as f16.", name,
                    array.shape[-1])
    return array.astype(np.float16), None


def gguf_tensors(model: Any, arch: str) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array in llama.cpp layout) for every weight, one at a time so that only one
    float32 copy of a tensor exists at once."""
    import torch
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES, get_tensor_name_map

    config = model.config
    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    names = get_tensor_name_map(arch_id, config.num_hidden_layers)
    allowed = {TENSOR_NAMES[t] for t in MODEL_TENSORS[arch_id]}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        base = found[1].rsplit(".", 1)[0] if found else None
        if found is None or not any(base == a.format(bid=i) for a in allowed for i in range(config.num_hidden_layers)):
            raise UserError(f"GGUF export: weight `{hf_name}` has no llama.cpp counterpart in architecture {arch}; "
                            f"supported: {SUPPORTED}")
        array = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
        if arch_id == MODEL_ARCH.LLAMA and base.endswith(("attn_q", "attn_k")):
            heads = config.num_attention_heads if base.endswith("attn_q") else config.num_key_value_heads
            array = rope_rows_to_interleaved(array, heads)
        yield found[1], array
    theta, rope = _rope(config)
    if rope.get("rope_type") == "llama3":
        if arch_id != MODEL_ARCH.LLAMA:
            raise UserError("GGUF export: llama3 rope scaling is only written for the llama architecture")
        yield TENSOR_NAMES[_tensor("ROPE_FREQS")] + ".weight", llama3_rope_factors(rope, _head_dim(config), theta)


def _tensor(name: str) -> Any:
    from gguf import MODEL_TENSOR

    return getattr(MODEL_TENSOR, name)


# ---------------------------------------------------------------------------------------------- writing
def _add_hyperparameters(writer: Any, config: Any, arch: str) -> None:
    from gguf import RopeScalingType

    head_dim = _head_dim(config)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    theta, rope = _rope(config)
    writer.add_rope_freq_base(theta)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", "llama3", None):
        raise UserError(f"GGUF export: rope scaling `{kind}` is not written yet (supported: none, linear, llama3)")


def write_gguf(model: Any, tokenizer: Any, path: str, gguf_type: str, name: str, eot_token_id: int | None,
               chat_template: str | None) -> None:
    """The whole model, its tokenizer and chat template in one GGUF file at `path`; `eot_token_id` is the
    template's end-of-turn token where it differs from eos (e.g. a chat template on a base model's vocab)."""
    from gguf import GGML_QUANT_VERSION, GGUFWriter, LlamaFileType

    if gguf_type not in GGUF_TYPES:
        raise UserError(f"`export_gguf_type` must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    config = model.config
    arch = check_gguf_support(config)
    vocab_size = int(model.get_input_embeddings().weight.shape[0])
    vocab = tokenizer_metadata(tokenizer, vocab_size)
    writer = GGUFWriter(path, arch, use_temp_file=True)
    writer.add_name(name)
    file_type = {"f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16,
                 "q8_0": LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_vocab_size(vocab_size)
    _add_hyperparameters(writer, config, arch)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_scores([0.0] * vocab_size)  # BPE merges by rank, which the merges list carries
    writer.add_token_merges(vocab["merges"])
    for key, adder in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if vocab[key] is not None:
            adder(int(vocab[key]))
    if eot_token_id is not None and eot_token_id != vocab["eos"]:
        writer.add_eot_token_id(int(eot_token_id))
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    count = 0
    for tensor_name, array in gguf_tensors(model, arch):
        data, raw_type = _encode(tensor_name, array, gguf_type)
        writer.add_tensor(tensor_name, data, raw_dtype=raw_type)  # spilled to a temp file past 256 MB
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("Wrote %s (%s, %d tensors, architecture %s).", path, gguf_type, count, arch)
