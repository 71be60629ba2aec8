"""The models the web UI offers by name: display name -> hub id and default chat template.

One entry per family that the template registry covers (tests check that every template named here exists
and that every family template has a model). Any other model works too: pick "Custom" and type its path.
Names are also the folder names under `saves/`, so they avoid slashes.
"""

import re
from dataclasses import dataclass

CUSTOM = "Custom"


@dataclass(frozen=True)
class ModelEntry:
    hub_id: str
    template: str


MODELS: dict[str, ModelEntry] = {
    # SmolLM
    "SmolLM2-135M-Instruct": ModelEntry("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
    "SmolLM2-360M-Instruct": ModelEntry("HuggingFaceTB/SmolLM2-360M-Instruct", "smollm2"),
    "SmolLM2-1.7B-Instruct": ModelEntry("HuggingFaceTB/SmolLM2-1.7B-Instruct", "smollm2"),
    "SmolLM-135M-Instruct": ModelEntry("HuggingFaceTB/SmolLM-135M-Instruct", "smollm"),
    # Qwen
    "Qwen2.5-0.5B-Instruct": ModelEntry("Qwen/Qwen2.5-0.5B-Instruct", "qwen"),
    "Qwen2.5-1.5B-Instruct": ModelEntry("Qwen/Qwen2.5-1.5B-Instruct", "qwen"),
    "Qwen2.5-7B-Instruct": ModelEntry("Qwen/Qwen2.5-7B-Instruct", "qwen"),
    "Qwen3-0.6B": ModelEntry("Qwen/Qwen3-0.6B", "qwen3"),
    "Qwen3-1.7B": ModelEntry("Qwen/Qwen3-1.7B", "qwen3"),
    "Qwen3-8B": ModelEntry("Qwen/Qwen3-8B", "qwen3"),
    "Qwen3-4B-Instruct-2507": ModelEntry("Qwen/Qwen3-4B-Instruct-2507", "qwen3_nothink"),
    # Llama
    "Llama-2-7B-Chat": ModelEntry("meta-llama/Llama-2-7b-chat-hf", "llama2"),
    "Llama-3.2-1B-Instruct": ModelEntry("meta-llama/Llama-3.2-1B-Instruct", "llama3"),
    "Llama-3.2-3B-Instruct": ModelEntry("meta-llama/Llama-3.2-3B-Instruct", "llama3"),
    "Llama-3.1-8B-Instruct": ModelEntry("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
    "Llama-4-Scout-17B-16E-Instruct": ModelEntry("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama4"),
    # Mistral
    "Mistral-7B-Instruct-v0.3": ModelEntry("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
    "Ministral-8B-Instruct-2410": ModelEntry("mistralai/Ministral-8B-Instruct-2410", "ministral"),
    # Gemma
    "Gemma-2B-Instruct": ModelEntry("google/gemma-2b-it", "gemma"),
    "Gemma-2-2B-Instruct": ModelEntry("google/gemma-2-2b-it", "gemma2"),
    "Gemma-3-1B-Instruct": ModelEntry("google/gemma-3-1b-it", "gemma3"),
    # Phi
    "Phi-3.5-mini-Instruct": ModelEntry("microsoft/Phi-3.5-mini-instruct", "phi"),
    "Phi-4": ModelEntry("microsoft/phi-4", "phi4"),
    # DeepSeek
    "DeepSeek-LLM-7B-Chat": ModelEntry("deepseek-ai/deepseek-llm-7b-chat", "deepseek"),
    "DeepSeek-V3": ModelEntry("deepseek-ai/DeepSeek-V3", "deepseek3"),
    "DeepSeek-R1-Distill-Qwen-1.5B": ModelEntry("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseekr1"),
    # GLM
    "GLM-4-9B-Chat": ModelEntry("THUDM/glm-4-9b-chat-hf", "glm4"),
    "ChatGLM3-6B-Chat": ModelEntry("THUDM/chatglm3-6b", "chatglm3"),
    # Others, one family each
    "Yi-1.5-6B-Chat": ModelEntry("01-ai/Yi-1.5-6B-Chat", "yi"),
    "InternLM2.5-7B-Chat": ModelEntry("internlm/internlm2_5-7b-chat", "intern2"),
    "Zephyr-7B-Beta": ModelEntry("HuggingFaceH4/zephyr-7b-beta", "zephyr"),
    "OpenChat-3.5-0106": ModelEntry("openchat/openchat-3.5-0106", "openchat"),
    "SOLAR-10.7B-Instruct": ModelEntry("upstage/SOLAR-10.7B-Instruct-v1.0", "solar"),
    "Falcon-7B-Instruct": ModelEntry("tiiuae/falcon-7b-instruct", "falcon"),
    "Command-R-35B": ModelEntry("CohereForAI/c4ai-command-r-v01", "cohere"),
    "Granite-3.1-2B-Instruct": ModelEntry("ibm-granite/granite-3.1-2b-instruct", "granite3"),
    "OLMo-2-7B-Instruct": ModelEntry("allenai/OLMo-2-1124-7B-Instruct", "olmo"),
    "StarChat2-15B": ModelEntry("HuggingFaceH4/starchat2-15b-v0.1", "starchat"),
    "GPT-OSS-20B": ModelEntry("openai/gpt-oss-20b", "gpt_oss"),
    "Seed-OSS-36B-Instruct": ModelEntry("ByteDance-Seed/Seed-OSS-36B-Instruct", "seed_oss"),
    "Baichuan2-7B-Chat": ModelEntry("baichuan-inc/Baichuan2-7B-Chat", "baichuan2"),
    "XVERSE-7B-Chat": ModelEntry("xverse/XVERSE-7B-Chat", "xverse"),
    "MiniCPM4-0.5B": ModelEntry("openbmb/MiniCPM4-0.5B", "cpm4"),
    "Vicuna-7B-v1.5": ModelEntry("lmsys/vicuna-7b-v1.5", "vicuna"),
    # Vision and audio (multimodal accordion; data with <image>/<video>/<audio>, see docs/multimodal.md)
    "Qwen2.5-VL-3B-Instruct": ModelEntry("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_vl"),
    "Qwen3-VL-2B-Instruct": ModelEntry("Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl_nothink"),
    "Qwen3-VL-2B-Thinking": ModelEntry("Qwen/Qwen3-VL-2B-Thinking", "qwen3_vl"),
    "LLaVA-1.5-7B": ModelEntry("llava-hf/llava-1.5-7b-hf", "llava"),
    "LLaVA-NeXT-Mistral-7B": ModelEntry("llava-hf/llava-v1.6-mistral-7b-hf", "llava_next"),
    "PaliGemma2-3B-pt-224": ModelEntry("google/paligemma2-3b-pt-224", "paligemma"),
    "Llama-3.2-11B-Vision-Instruct": ModelEntry("meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama"),
    "Qwen2-Audio-7B-Instruct": ModelEntry("Qwen/Qwen2-Audio-7B-Instruct", "qwen2_audio"),
}

DEFAULT_MODEL = "SmolLM2-135M-Instruct"

# Every registered template (the registry lives in data/, which the web UI does not import; a test keeps this
# list equal to it). Generic ones come first in the dropdown.
TEMPLATES = (
    "default", "empty", "fewshot", "alpaca", "chatml", "baichuan2", "chatglm3", "cohere", "cpm4", "deepseek",
    "deepseek3", "deepseekr1", "falcon", "gemma", "gemma2", "gemma3", "glm4", "gpt_oss", "granite3", "intern2",
    "llama2", "llama3", "llama4", "ministral", "mistral", "olmo", "openchat", "phi", "phi4", "qwen", "qwen3",
    "qwen3_nothink", "seed_oss", "smollm", "smollm2", "solar", "starchat", "vicuna", "xverse", "yi", "zephyr",
    "llava", "llava_next", "qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "paligemma", "mllama",
    "qwen2_audio",
)
GENERIC_TEMPLATES = ("default", "empty", "fewshot", "alpaca", "chatml")


def model_choices() -> list[str]:
    return [*MODELS, CUSTOM]


def hub_id(name: str) -> str:
    entry = MODELS.get(name)
    return entry.hub_id if entry else ""


def default_template(name: str) -> str:
    """The template a registered model uses; `default` for anything else (the user should pick one)."""
    entry = MODELS.get(name)
    return entry.template if entry else "default"


def find_by_path(path: str) -> str | None:
    """The registered name whose hub id is `path` (so a typed hub id shows its name), else None."""
    for name, entry in MODELS.items():
        if entry.hub_id.lower() == path.strip().lower():
            return name
    return None


def folder_name(model_name: str, model_path: str) -> str:
    """Name of the model's folder under saves/: the registered name, else the last part of the path."""
    if model_name and model_name != CUSTOM:
        raw = model_name
    else:
        raw = model_path.rstrip("/\\").replace("\\", "/").split("/")[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"
