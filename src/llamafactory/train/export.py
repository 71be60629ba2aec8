"""`lmf export cfg.yaml`: merge adapters into the base and write a model that runs without llamafactory.

Writes `export_dir` as a Hugging Face folder (safetensors shards of `export_size` GB, or .bin with
`export_legacy_format`) or as one llama.cpp GGUF file (`export_format: gguf`), always with the tokenizer
carrying the training template as its chat template, and an Ollama `Modelfile`. Every check that can fail
runs before any weight is loaded; the files are written to a staging folder and moved into place at the
end, so a failed export never leaves a half-written `export_dir`.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from typing import Any

from ..extras.errors import ConfigError, UserError
from ..extras.logging import get_logger
from ..hparams.parser import get_infer_args

logger = get_logger(__name__)

MARKER = ".llamafactory-export.json"  # names the files an export wrote, so a later export may replace them
MERGEABLE = ("LORA", "OFT")  # peft types whose weights fold into the base (DoRA is LoRA with use_dora)
GPTQ_BITS = (2, 3, 4, 8)


def export_model(argv: list[str]) -> None:
    """Read the config, check everything cheap, then load, merge and write."""
    model_args, data_args, finetuning_args, _ = get_infer_args(argv)
    adapters = _adapters(model_args)
    check_export_args(model_args, finetuning_args, adapters)
    previous = _check_export_dir(model_args.export_dir)
    value_head = _value_head_source(model_args, finetuning_args, adapters)

    from ..data.template import Template, get_template_and_fix_tokenizer
    from ..model.loader import load_processor, load_tokenizer

    tokenizer = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    processor = load_processor(model_args, tokenizer)  # multimodal models: image processor / feature extractor
    if model_args.export_quantization_bit is not None:
        model = _load_gptq(model_args, tokenizer)
    else:
        model = load_merged_model(model_args, finetuning_args, tokenizer, adapters)

    export_dir = os.path.abspath(model_args.export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".lmf-export-", dir=parent)
    try:
        stops = template.stop_token_ids(tokenizer)
        if model_args.export_format == "gguf":
            from ..model.model_utils.gguf_export import write_gguf

            source = f"{os.path.basename(export_dir) or 'model'}-{model_args.export_gguf_type}.gguf"
            name = os.path.basename(os.path.normpath(model_args.model_name_or_path))
            write_gguf(model, tokenizer, os.path.join(staging, source), model_args.export_gguf_type, name,
                       _end_of_turn(template, tokenizer), tokenizer.chat_template)
            source = "./" + source
        else:
            _set_generation_config(model, tokenizer, stops)
            save_weights(model, staging, model_args.export_size, model_args.export_legacy_format)
            tokenizer.save_pretrained(staging)
            if processor is not None:
                processor.save_pretrained(staging)
            source = "."
        if value_head:
            shutil.copy(value_head, os.path.join(staging, os.path.basename(value_head)))
        _write_modelfile(staging, source, template if isinstance(template, Template) else None, tokenizer)
        _move_into_place(staging, export_dir, previous)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Exported to %s.", export_dir)
    if model_args.export_hub_model_id:
        push_to_hub(export_dir, model_args.export_hub_model_id, model_args.hf_hub_token)


# ---------------------------------------------------------------------------------------------- checks
def _adapters(model_args: Any) -> list[str]:
    return [a.strip() for a in (model_args.adapter_name_or_path or "").split(",") if a.strip()]


def check_export_args(model_args: Any, finetuning_args: Any, adapters: list[str]) -> None:
    """Refuse what cannot work, in one line each, before anything heavy is loaded."""
    if not model_args.export_dir:
        raise ConfigError("missing required key `export_dir` (the folder `lmf export` writes the model to)")
    if model_args.export_size <= 0:
        raise ConfigError(f"`export_size` is the shard size in GB and must be positive, got {model_args.export_size}")
    if model_args.quantization_bit is not None:
        if adapters:
            raise ConfigError("`quantization_bit` quantizes the base on load, and merging adapters into 4/8-bit "
                              "weights would round the result (and bitsandbytes weights cannot be saved merged); "
                              "remove `quantization_bit`: a QLoRA adapter merges into the full-precision base")
        raise ConfigError("`quantization_bit` quantizes on load for training and chat; it does not export: remove "
                          "it (use `export_quantization_bit` for a GPTQ export)")
    if model_args.export_format == "gguf":
        if model_args.export_legacy_format:
            raise ConfigError("`export_legacy_format` (.bin files) does not apply to `export_format: gguf`")
        if model_args.export_quantization_bit is not None:
            raise ConfigError("`export_quantization_bit` (GPTQ) does not apply to `export_format: gguf`; choose "
                              "`export_gguf_type: q8_0` for a smaller GGUF")
    if model_args.export_quantization_bit is not None:
        _check_gptq(model_args, adapters)
    for path in adapters:
        config_path = os.path.join(path, "adapter_config.json")
        if not os.path.isfile(config_path):
            raise UserError(f"adapter `{path}` not found: `adapter_name_or_path` must name folders that hold "
                            "adapter_config.json")
        with open(config_path, encoding="utf-8") as f:
            kind = str(json.load(f).get("peft_type", "")).upper()
        if kind not in MERGEABLE:
            raise UserError(f"adapter `{path}` is a {kind or 'unknown'} adapter, which cannot be merged into the "
                            "base; export merges lora, dora and oft adapters")


def _check_gptq(model_args: Any, adapters: list[str]) -> None:
    bits = model_args.export_quantization_bit
    if adapters:
        raise ConfigError("GPTQ quantizes the model it is given: export the merged model first (without "
                          "`export_quantization_bit`), then quantize that export in a second run")
    if bits not in GPTQ_BITS:
        raise ConfigError(f"`export_quantization_bit` must be one of {', '.join(map(str, GPTQ_BITS))}, got {bits}")
    if not model_args.export_quantization_dataset:
        raise ConfigError("`export_quantization_bit` needs `export_quantization_dataset` (a json, jsonl or txt "
                          "file of calibration text)")
    if not os.path.isfile(model_args.export_quantization_dataset):
        raise ConfigError(f"`export_quantization_dataset` file `{model_args.export_quantization_dataset}` not found")
    import torch

    missing = [p for p in ("optimum", "gptqmodel") if importlib.util.find_spec(p) is None]
    reasons = []
    if not torch.cuda.is_available():
        reasons.append("a CUDA GPU (this machine has none)")
    if missing:
        reasons.append(f"the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''} "
                       f"(`pip install {' '.join(missing)}`)")
    if reasons:
        raise UserError(f"`export_quantization_bit` (GPTQ) needs {' and '.join(reasons)}; remove it to export "
                        "unquantized, or use `export_format: gguf` with `export_gguf_type: q8_0`")


def _check_export_dir(export_dir: str) -> list[str]:
    """Never overwrite a user's files: only an empty folder, or one holding nothing but an earlier export's
    files (listed in its marker), may be written. Returns the earlier export's files, to be replaced."""
    if not os.path.isdir(export_dir):
        if os.path.exists(export_dir):
            raise ConfigError(f"export_dir `{export_dir}` is a file, not a folder")
        return []
    present = sorted(os.listdir(export_dir))
    if not present:
        return []
    marker = os.path.join(export_dir, MARKER)
    if not os.path.isfile(marker):
        raise ConfigError(f"export_dir `{export_dir}` already holds files that `lmf export` did not write; choose a "
                          "new `export_dir` or empty that folder")
    with open(marker, encoding="utf-8") as f:
        ours = set(json.load(f).get("files", []))
    foreign = [name for name in present if name not in ours and name != MARKER]
    if foreign:
        raise ConfigError(f"export_dir `{export_dir}` holds an earlier export plus files it did not write "
                          f"({', '.join(foreign[:3])}); choose a new `export_dir` or move them away")
    return sorted(name for name in present if name in ours)  # never a path the marker names outside the folder


def _value_head_source(model_args: Any, finetuning_args: Any, adapters: list[str]) -> str | None:
    """Reward models (`stage: rm`) keep their value head beside the weights; find it before any work."""
    if finetuning_args.stage != "rm":
        return None
    from ..model.model_utils.valuehead import VALUE_HEAD_FILE

    folders = adapters[-1:] + [model_args.model_name_or_path]
    for folder in folders:
        path = os.path.join(folder, VALUE_HEAD_FILE)
        if os.path.isfile(path):
            return path
    raise UserError(f"`stage: rm` exports a reward model, but no {VALUE_HEAD_FILE} is in "
                    f"`{folders[0]}`; point `adapter_name_or_path` (or the model) at the output of `stage: rm`")


# ---------------------------------------------------------------------------------------------- loading
def export_dtype(model_args: Any, config: Any, on_gpu: bool) -> Any:
    """`infer_dtype`, or with auto the checkpoint's own dtype, fp32 becoming bf16 where bf16 is supported.

    "Supported" is about storage, not arithmetic: the export only stores the weights. On CUDA that means
    `torch.cuda.is_bf16_supported()` (else fp16); every CPU can store and read bf16 (torch and llama.cpp
    convert it in software where the CPU lacks bf16 instructions), so a CPU export of an fp32 checkpoint
    is bf16. Set `infer_dtype: float32` to keep fp32.
    """
    import torch

    if model_args.infer_dtype != "auto":
        return getattr(torch, model_args.infer_dtype)
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    if saved not in (None, torch.float32):
        return saved
    if on_gpu:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def load_merged_model(model_args: Any, finetuning_args: Any, tokenizer: Any, adapters: list[str]) -> Any:
    """The base on `export_device`, every adapter merged into it in order, in the export dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig

    from ..model.loader import load_model
    from ..model.model_utils.hub import resolve_model

    source = resolve_model(model_args)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    config = AutoConfig.from_pretrained(source.path, trust_remote_code=model_args.trust_remote_code,
                                        cache_dir=model_args.cache_dir, token=model_args.hf_hub_token, **kwargs)
    if adapters and getattr(config, "quantization_config", None) and not source.gguf_file:
        method = dict(config.quantization_config).get("quant_method", "quantized")
        raise UserError(f"`{model_args.model_name_or_path}` is a {method} checkpoint; merging adapters into quantized "
                        "weights would round the result: merge into the unquantized base model instead")
    if model_args.export_format == "gguf":
        from ..model.model_utils.gguf_export import check_gguf_support

        check_gguf_support(config)  # before the weights load
    on_gpu = model_args.export_device == "auto" and torch.cuda.is_available()
    dtype = export_dtype(model_args, config, on_gpu)
    if model_args.export_format == "gguf" and model_args.infer_dtype == "auto":
        dtype = torch.float32  # the GGUF type decides the stored precision; merge at full precision
    base_args = dataclasses.replace(model_args, adapter_name_or_path=None)
    model = load_model(tokenizer, base_args, finetuning_args, is_trainable=False, dtype=dtype, source=source)
    if on_gpu:
        model.to("cuda")
    for path in adapters:
        model = PeftModel.from_pretrained(model, path).merge_and_unload(safe_merge=True)
        logger.info("Merged adapter %s.", path)
    model.to(dtype)  # peft may keep adapter-only modules (modules_to_save) in fp32
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens (the template or `add_tokens` added some) but the "
                        f"model's embeddings have {rows} rows; set `resize_vocab: true` as in training")
    model.requires_grad_(False)
    return model


def _load_gptq(model_args: Any, tokenizer: Any) -> Any:
    """GPTQ through transformers (gptqmodel + optimum, CUDA). Reached only when `_check_gptq` passed."""
    import torch
    from transformers import AutoModelForCausalLM, GPTQConfig

    texts = calibration_texts(model_args.export_quantization_dataset, model_args.export_quantization_nsamples)
    config = GPTQConfig(bits=model_args.export_quantization_bit, dataset=texts, tokenizer=tokenizer,
                        model_seqlen=model_args.export_quantization_maxlen)
    from ..model.model_utils.hub import resolve_model

    return AutoModelForCausalLM.from_pretrained(resolve_model(model_args).path, quantization_config=config,
                                                device_map="auto", dtype=torch.float16,
                                                trust_remote_code=model_args.trust_remote_code)


def calibration_texts(path: str, count: int) -> list[str]:
    """Up to `count` texts: lines of a .txt file, or the string fields of each json/jsonl row."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".txt"):
            rows: list[Any] = [line for line in f.read().splitlines() if line.strip()]
        elif path.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = json.load(f)
    texts = []
    for row in rows:
        text = row if isinstance(row, str) else "\n".join(v for v in row.values() if isinstance(v, str) and v)
        if text.strip():
            texts.append(text)
    if not texts:
        raise UserError(f"`export_quantization_dataset` `{path}` holds no text")
    return texts[:count]


# ---------------------------------------------------------------------------------------------- writing
def _end_of_turn(template: Any, tokenizer: Any) -> int | None:
    """The id of the template's first stop word (the end of an assistant turn), when it is a real token."""
    words = getattr(template, "stop_words", ())
    if not words:
        return None
    token_id = tokenizer.convert_tokens_to_ids(words[0])
    return None if token_id is None or token_id == tokenizer.unk_token_id else token_id


def _set_generation_config(model: Any, tokenizer: Any, stops: list[int]) -> None:
    """Generation stops at the template's stop tokens, as `lmf chat` does."""
    generation = getattr(model, "generation_config", None)
    if generation is None or not stops:
        return
    generation.eos_token_id = stops if len(stops) > 1 else stops[0]
    if tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id


def save_weights(model: Any, folder: str, size_gb: float, legacy: bool) -> None:
    """save_pretrained in shards of at most `size_gb` GB (1 GB = 10^9 bytes, as transformers counts; a
    tensor larger than that gets a shard of its own); `legacy` rewrites the shards as pytorch .bin files."""
    model.save_pretrained(folder, max_shard_size=max(1, int(size_gb * 10**9)))
    if legacy:
        _to_legacy_format(folder)


def _to_legacy_format(folder: str) -> None:
    """model*.safetensors -> pytorch_model*.bin with a matching index, for tools that predate safetensors."""
    import torch
    from safetensors.torch import load_file

    renamed = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("model") and name.endswith(".safetensors"):
            new = "pytorch_model" + name[len("model"):-len(".safetensors")] + ".bin"
            torch.save(load_file(os.path.join(folder, name)), os.path.join(folder, new))
            os.remove(os.path.join(folder, name))
            renamed[name] = new
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            data = json.load(f)
        data["weight_map"] = {k: renamed.get(v, v) for k, v in data["weight_map"].items()}
        with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.remove(index)


def _write_modelfile(folder: str, source: str, template: Any, tokenizer: Any) -> None:
    from ..model.model_utils.ollama import render_modelfile

    stop_words = list(template.stop_words) if template is not None else []
    text = render_modelfile(source, template, stop_words, tokenizer.eos_token)
    with open(os.path.join(folder, "Modelfile"), "w", encoding="utf-8") as f:
        f.write(text)


def _move_into_place(staging: str, export_dir: str, previous: list[str]) -> None:
    """Replace an earlier export's files (only those) with the new ones, and record what was written."""
    os.makedirs(export_dir, exist_ok=True)
    for name in previous:
        path = os.path.join(export_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    written = sorted(os.listdir(staging))
    umask = os.umask(0)
    os.umask(umask)
    for name in written:
        target = os.path.join(export_dir, name)
        shutil.move(os.path.join(staging, name), target)  # a rename, or a copy when export_dir is another mount
        os.chmod(target, 0o666 & ~umask)  # some writers create private temp files; an export is meant to be shared
    with open(os.path.join(export_dir, MARKER), "w", encoding="utf-8") as f:
        json.dump({"files": written}, f, indent=2)


def push_to_hub(export_dir: str, repo_id: str, token: str | None) -> None:
    """Upload the finished export; a failure says the local export is complete and how to push it later."""
    from ..extras.network import hub_online

    later = f"the export is complete in `{export_dir}`, but pushing it to the hub repository `{repo_id}` failed"
    retry = f"; push it later with `hf upload {repo_id} {export_dir}`"
    if not hub_online():
        raise UserError(f"{later}: the Hugging Face hub cannot be reached (offline){retry}")
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=export_dir, repo_id=repo_id, ignore_patterns=[MARKER])
    except Exception as err:  # noqa: BLE001 - any hub failure gets the same actionable message
        raise UserError(f"{later}: {' '.join(str(err).split())[:300]}{retry}") from err
    logger.info("Pushed %s to https://huggingface.co/%s.", export_dir, repo_id)
