"""Find a model's files: a local folder, a .gguf file, the hub, or the packaged default model.

When a hub id cannot be fetched and a packaged GGUF copy of that model is installed, the GGUF is
converted once into a cached HF folder and used from then on, so the default model works offline.
"""

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass

from ...extras import envs
from ...extras.constants import EMBEDDED_INSTALL_HINT, EMBEDDED_MODELS
from ...extras.errors import UserError
from ...extras.logging import get_logger
from ...extras.network import hub_online

logger = get_logger(__name__)

CONVERTED_MARK = ".llamafactory-converted"


@dataclass
class ModelSource:
    """Arguments for `from_pretrained`: a path or hub id, plus `gguf_file` for GGUF checkpoints."""

    path: str
    gguf_file: str | None = None


def _looks_local(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a path on disk."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def embedded_gguf(model_id: str) -> str | None:
    """Path of the packaged GGUF for a hub id, found without importing its package."""
    entry = EMBEDDED_MODELS.get(model_id.lower())
    if entry is None:
        return None
    package, filename = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def convert_gguf_to_folder(gguf_path: str, target: str) -> str:
    """Dequantize a GGUF checkpoint into a plain HF folder (weights, config, tokenizer) at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    # The weights are dequantized already; drop the GGUF quantizer so they save as ordinary tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target) or ".")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        with open(os.path.join(staging, CONVERTED_MARK), "w", encoding="utf-8") as f:
            f.write(gguf_path + "\n")
        if os.path.isdir(target):  # another process finished first
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _embedded_folder(model_id: str, reason: str) -> str:
    gguf_path = embedded_gguf(model_id)
    if gguf_path is None:
        hint = EMBEDDED_INSTALL_HINT.get(model_id.lower())
        raise UserError(f"cannot fetch model `{model_id}` from the hub ({reason}) and its packaged copy is not "
                        f"installed: run `{hint}`, or point model_name_or_path at a local folder")
    target = os.path.join(envs.cache_dir(), "models", model_id.replace("/", "--"))
    if os.path.isfile(os.path.join(target, CONVERTED_MARK)):
        logger.warning("Hub unreachable for %s; using the copy converted from its packaged GGUF at %s.", model_id,
                       target)
        return target
    logger.warning("Hub unreachable for %s (%s); converting the packaged GGUF %s (weights dequantized from "
                   "its quantized file) into %s, once.", model_id, reason, gguf_path, target)
    return convert_gguf_to_folder(gguf_path, target)


def _hub_reachable(model_id: str, revision: str, cache_dir: str | None, token: str | None) -> str | None:
    """None when the model's config can be had from the hub or its cache, else the reason it cannot."""
    from huggingface_hub import hf_hub_download

    online = hub_online()
    try:
        hf_hub_download(model_id, "config.json", revision=revision, cache_dir=cache_dir, token=token,
                        local_files_only=not online)
        return None
    except Exception as err:  # noqa: BLE001 - offline, not found, gated: all mean "not from the hub"
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        where = "" if online else "the hub is unreachable and the local cache lacks it; "
        return f"{where}{type(err).__name__}: {first}"[:240]


def resolve_model(model_args: object) -> ModelSource:
    name = os.path.expanduser(model_args.model_name_or_path)
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise UserError(f"model file `{name}` not found")
        folder, filename = os.path.split(os.path.abspath(name))
        return ModelSource(folder, filename)
    if os.path.isdir(name):
        return ModelSource(name)
    if _looks_local(name):
        raise UserError(f"model folder `{name}` not found")
    if envs.use_modelscope():
        try:
            from modelscope import snapshot_download
        except ImportError as err:
            raise UserError("USE_MODELSCOPE_HUB=1 needs the modelscope package: `pip install modelscope`") from err
        if model_args.ms_hub_token:
            from modelscope.hub.api import HubApi

            HubApi().login(model_args.ms_hub_token)
        return ModelSource(snapshot_download(name, revision=model_args.model_revision, cache_dir=model_args.cache_dir))
    reason = _hub_reachable(name, model_args.model_revision, model_args.cache_dir, model_args.hf_hub_token)
    if reason is None:
        return ModelSource(name)
    if name.lower() in EMBEDDED_MODELS:
        return ModelSource(_embedded_folder(name, reason))
    raise UserError(f"cannot fetch model `{name}` from the Hugging Face hub ({reason}); check the id and your "
                    "network, or point model_name_or_path at a local folder or .gguf file")
