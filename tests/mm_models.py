"""Tiny multimodal models and processors built locally (no download) for the multimodal tests.

`build_processor(family, tokenizer=None)` returns the family's Hugging Face processor (PIL image processors, so
torchvision is not needed; Qwen2-VL/Qwen3-VL come without a video processor, which would need torchvision: see
`llamafactory.model.model_utils.visual.processor_without_video`, which the project's `load_processor` also uses
for such folders). `build_model_dir(family, path)` saves a folder that `AutoTokenizer`, `AutoConfig`, the
model's auto class (`model_class(family)`) and `AutoProcessor` load (Qwen-VL: via the project's
`load_processor`): a seeded random model with 2 text layers (hidden 32), a 1-2 layer vision/audio tower, and the
processor, whose tokenizer ids match the config. Also public: `build_tokenizer(family)`, `build_config(family,
tokenizer)`, `build_model(family, tokenizer)`, `model_class(family)`, `sample_batch(family, processor)` (model
inputs for one prompt in the family's format, SAMPLE_PROMPTS, with one image or audio clip) and FAMILIES.

Each tokenizer is the byte-level BPE of tests/conftest.py trained on CORPUS (466 tokens: `<|endoftext|>` = 0 is
eos and pad, `<|im_start|>` = 1, `<|im_end|>` = 2) plus the family's special tokens from id 466 on, in the order
listed (named ones are tokenizer attributes, e.g. `tokenizer.image_token`). Per family:

- llava: `<image>` 466. CLIP tower, 28x28 crop, patch 14, "default" feature select: 4 tokens per image.
- llava_next: `<image>` 466. Base tile 28x28 plus tiles on pinpoints (28,56), (56,28), (56,56): the count
  depends on the image size (base 4 + unpadded tile features + one newline per row).
- qwen2_vl: `<|vision_start|>` 466, `<|vision_end|>` 467, `<|image_pad|>` 468, `<|video_pad|>` 469. Patch 14,
  merge 2, images resized to 784..12544 pixels (multiples of 28): (h/28)*(w/28) tokens. M-RoPE [2, 3, 3].
- qwen3_vl: the same four ids, plus `<think>` 470 and `</think>` 471 (plain tokens). Patch 16, merge 2,
  1024..16384 pixels (multiples of 32): (h/32)*(w/32) tokens; deepstack on vision layer 0.
- gemma3: `<start_of_image>` 466 (boi_token), `<image_soft_token>` 467 (image_token), `<end_of_image>` 468
  (eoi_token), `<bos>` 469 (bos), `<start_of_turn>` 470, `<end_of_turn>` 471. SigLIP 28x28, patch 14: the
  processor turns each `<start_of_image>` into "\n\n<start_of_image>" + 4 soft tokens + "<end_of_image>\n\n".
- paligemma: `<image>` 466, `<bos>` 467 (bos); the processor appends 1152 `<locNNNN>`/`<segNNN>` tokens
  (1620 in all). SigLIP 28x28, patch 14: 4 `<image>` tokens per image before `<bos>`.
- mllama: `<|image|>` 466 (one token per image), `<|begin_of_text|>` 467 (bos), `<|start_header_id|>` 468,
  `<|end_header_id|>` 469, `<|eot_id|>` 470, `<|python_tag|>` 471. Tiles of 28x28, at most 2 per image
  (aspect ratios (1,1), (1,2), (2,1)); cross-attention on text layer 1.
- qwen2_audio: `<|audio_bos|>` 466, `<|AUDIO|>` 467 (audio_token), `<|audio_eos|>` 468. Whisper features at
  16 kHz with 128 mel bins, every clip padded/cut to 2 s (200 frames): ((frames-1)//2+1-2)//2+1 audio tokens
  for the frames the clip fills (50 for a full 2 s clip).

The model's `vocab_size` is `len(tokenizer)` after the processor is built, and its media token ids match.
"""

import os
from typing import Any

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen3_vl", "gemma3", "paligemma", "mllama", "qwen2_audio")

CORPUS = [
    "Who are you? I am Lumen, an assistant made by Forge.",
    "What is in the picture? A red circle on a blue square. The image shows a green triangle.",
    "What colour is the shape? It is red. It is blue. It is green. yellow square circle triangle",
    "What do you hear? A high tone. A low tone. The audio is a beep at 440 hertz.",
    "system user assistant model USER: ASSISTANT: Human: Assistant: describe this image in detail",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 seconds video frame",
]

# Special tokens per family: (name -> token) for the named ones, then plain special tokens, then plain tokens.
NAMED: dict[str, dict[str, str]] = {
    "llava": {"image_token": "<image>"},
    "llava_next": {"image_token": "<image>"},
    "qwen2_vl": {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
                 "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    "qwen3_vl": {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
                 "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    "gemma3": {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"},
    "paligemma": {"image_token": "<image>"},
    "mllama": {"image_token": "<|image|>"},
    "qwen2_audio": {"audio_bos_token": "<|audio_bos|>", "audio_token": "<|AUDIO|>",
                    "audio_eos_token": "<|audio_eos|>"},
}
EXTRA_SPECIAL: dict[str, list[str]] = {
    "gemma3": ["<bos>", "<start_of_turn>", "<end_of_turn>"],
    "paligemma": ["<bos>"],
    "mllama": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"],
}
EXTRA_PLAIN: dict[str, list[str]] = {"qwen3_vl": ["<think>", "</think>"]}
BOS = {"gemma3": "<bos>", "paligemma": "<bos>", "mllama": "<|begin_of_text|>"}

TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 1024}
AUDIO_SECONDS = 2  # the feature extractor pads/truncates every clip to this length


def _check(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def build_tokenizer(family: str) -> Any:
    """The test BPE vocabulary plus the family's special tokens (named ones become tokenizer attributes)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import CHATML_JINJA
    from tests.conftest import build_tokenizer as build_base

    _check(family)
    backend = build_base(CORPUS * 10).backend_tokenizer
    named = NAMED[family]
    special = list(named.values()) + EXTRA_SPECIAL.get(family, [])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if EXTRA_PLAIN.get(family):
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in EXTRA_PLAIN[family]])
    kwargs: dict[str, Any] = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    if family in BOS:
        kwargs["bos_token"] = BOS[family]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=dict(named), **kwargs)
    tokenizer.chat_template = CHATML_JINJA
    return tokenizer


def _image_processor(family: str) -> Any:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if family == "llava":
        return CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    if family == "llava_next":
        return LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                          image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]])
    if family == "qwen2_vl":
        return Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112}, patch_size=14,
                                        temporal_patch_size=2, merge_size=2)
    if family == "qwen3_vl":
        return Qwen2VLImageProcessorPil(size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128}, patch_size=16,
                                        temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5],
                                        image_std=[0.5, 0.5, 0.5])
    if family == "gemma3":
        return Gemma3ImageProcessorPil(size={"height": 28, "width": 28}, image_mean=[0.5, 0.5, 0.5],
                                       image_std=[0.5, 0.5, 0.5], pan_and_scan_min_crop_size=28,
                                       pan_and_scan_max_num_crops=2, pan_and_scan_min_ratio_to_activate=1.2)
    if family == "paligemma":
        processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
        processor.image_seq_length = 4
        return processor
    if family == "mllama":
        return MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=2)
    raise ValueError(family)


def build_processor(family: str, tokenizer: Any = None) -> Any:
    """The family's HF processor around `tokenizer` (default: a fresh `build_tokenizer(family)`)."""
    from transformers import (
        Gemma3Processor,
        LlavaNextProcessor,
        LlavaProcessor,
        MllamaProcessor,
        PaliGemmaProcessor,
        Qwen2AudioProcessor,
        Qwen2VLProcessor,
        Qwen3VLProcessor,
        WhisperFeatureExtractor,
    )

    from llamafactory.model.model_utils.visual import processor_without_video

    _check(family)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(family)
    if family == "qwen2_audio":
        extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=AUDIO_SECONDS,
                                            hop_length=160, n_fft=400, return_attention_mask=True)
        return Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    images = _image_processor(family)
    if family == "llava":
        return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=CHAT_TEMPLATE)
    if family == "llava_next":
        return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=CHAT_TEMPLATE)
    if family == "qwen2_vl":
        return processor_without_video(Qwen2VLProcessor, image_processor=images, tokenizer=tokenizer,
                                       chat_template=CHAT_TEMPLATE)
    if family == "qwen3_vl":
        return processor_without_video(Qwen3VLProcessor, image_processor=images, tokenizer=tokenizer,
                                       chat_template=CHAT_TEMPLATE)
    if family == "gemma3":
        return Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4,
                               chat_template=CHAT_TEMPLATE)
    if family == "paligemma":
        return PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    return MllamaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


# A plain chat template so `apply_chat_template` works; the project's own templates format the real prompts.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '\n' }}{% endfor %}"
)


# One prompt per family in the model's own format, with the placeholder its processor expands.
SAMPLE_PROMPTS = {
    "llava": "USER: <image>\nWhat is it? ASSISTANT: a red square",
    "llava_next": "USER: <image>\nWhat is it? ASSISTANT: a red square",
    "qwen2_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
                "<|im_start|>assistant\na red square<|im_end|>",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
                "<|im_start|>assistant\na red square<|im_end|>",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>What is it?<end_of_turn>\n<start_of_turn>model\nred",
    "paligemma": "<image>What is it?",
    "mllama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is it?<|eot_id|>",
    "qwen2_audio": "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat is it?<|im_end|>",
}


def sample_batch(family: str, processor: Any) -> dict[str, Any]:
    """The processor's tensors for SAMPLE_PROMPTS[family] with one random 40x60 image (or a 1 s 440 Hz tone),
    plus `labels` (the input ids; paligemma: its processor's, which train on a suffix only)."""
    import numpy as np
    from PIL import Image

    _check(family)
    if family == "qwen2_audio":
        t = np.arange(16000, dtype=np.float32) / 16000
        batch = processor(text=[SAMPLE_PROMPTS[family]], audio=[0.3 * np.sin(2 * np.pi * 440 * t)],
                          sampling_rate=16000, return_tensors="pt")
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
        extra = {"suffix": ["a red square"]} if family == "paligemma" else {}
        batch = processor(text=[SAMPLE_PROMPTS[family]], images=[[image]] if family == "mllama" else [image],
                          return_tensors="pt", **extra)
    batch = dict(batch)
    batch.setdefault("labels", batch["input_ids"].clone())
    return batch


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def build_config(family: str, tokenizer: Any) -> Any:
    """A tiny config whose token ids (media, bos/eos/pad) and vocabulary size match `tokenizer`."""
    from transformers import (
        CLIPVisionConfig,
        Gemma3Config,
        LlavaConfig,
        LlavaNextConfig,
        MllamaConfig,
        PaliGemmaConfig,
        Qwen2AudioConfig,
        Qwen2VLConfig,
        Qwen3VLConfig,
        SiglipVisionConfig,
    )

    _check(family)
    vocab = len(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    bos = tokenizer.bos_token_id
    ids = {"vocab_size": vocab, "eos_token_id": eos, "pad_token_id": pad, "bos_token_id": bos}
    text = {**TEXT, **ids}
    if family in ("llava", "llava_next"):
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=28, patch_size=14, projection_dim=32)
        common = {"vision_config": vision, "text_config": {"model_type": "llama", **text},
                  "image_token_index": _ids(tokenizer, "<image>")[0], "vision_feature_layer": -1,
                  "vision_feature_select_strategy": "default", "tie_word_embeddings": False}
        if family == "llava":
            return LlavaConfig(image_seq_length=4, **common)
        return LlavaNextConfig(image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]], image_seq_length=4, **common)
    if family in ("qwen2_vl", "qwen3_vl"):
        start, end, image, video = _ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                        "<|video_pad|>")
        media = {"image_token_id": image, "video_token_id": video, "vision_start_token_id": start,
                 "vision_end_token_id": end, "tie_word_embeddings": False}
        if family == "qwen2_vl":
            rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
            return Qwen2VLConfig(
                text_config={**text, "rope_parameters": rope},
                vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
                **media)
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
        return Qwen3VLConfig(
            text_config={**text, "head_dim": 16, "rope_parameters": rope},
            vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                           "out_hidden_size": 32, "patch_size": 16, "spatial_merge_size": 2,
                           "temporal_patch_size": 2, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
            **media)
    if family == "gemma3":
        boi, image, eoi = _ids(tokenizer, "<start_of_image>", "<image_soft_token>", "<end_of_image>")
        return Gemma3Config(
            text_config={**text, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64},
            vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=28, patch_size=14,
                                             vision_use_head=False),
            mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
            eos_token_id=eos, pad_token_id=pad, bos_token_id=bos)
    if family == "paligemma":
        return PaliGemmaConfig(
            text_config={"model_type": "gemma", **text, "head_dim": 16},
            vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                           "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                           "vision_use_head": False},
            image_token_index=_ids(tokenizer, "<image>")[0], vocab_size=vocab, projection_dim=32, hidden_size=32,
            eos_token_id=eos, pad_token_id=pad, bos_token_id=bos)
    if family == "mllama":
        return MllamaConfig(
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
                           "attention_heads": 2, "image_size": 28, "patch_size": 14, "max_num_tiles": 2,
                           "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]], "intermediate_layers_indices": [0],
                           "vision_output_dim": 64},
            text_config={**text, "cross_attention_layers": [1]},
            image_token_index=_ids(tokenizer, "<|image|>")[0])
    audio = _ids(tokenizer, "<|AUDIO|>")[0]
    return Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128, "max_source_positions": AUDIO_SECONDS * 50},
        text_config={"model_type": "qwen2", **text}, audio_token_index=audio)


def model_class(family: str) -> Any:
    """The transformers class that trains this family (what the project's loader should pick)."""
    import transformers

    _check(family)
    if family == "qwen2_audio":
        return transformers.Qwen2AudioForConditionalGeneration
    return transformers.AutoModelForImageTextToText


def build_model(family: str, tokenizer: Any) -> Any:
    """A seeded, randomly initialised tiny model of `family` (fp32, train mode off)."""
    import torch

    config = build_config(family, tokenizer)
    torch.manual_seed(0)
    cls = model_class(family)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    # Random init leaves gemma3's image projection and mllama's cross-attention/tile gates at zero, so media
    # would not reach the text (and an adapted tower would get no gradient): give them a small value instead.
    # The LM head gets a wider spread than the 0.02 default: at hidden size 32 that default makes every
    # distribution nearly uniform whatever the layers compute, so an adapter (which cannot touch the head)
    # could not show that it learned.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lm_head.weight"):
                param.normal_(0.0, 0.3)
            elif name.endswith("mm_input_projection_weight"):
                param.normal_(0.0, 0.2)
            elif name.endswith("gate") and family == "mllama":
                param.fill_(0.5)
    return model.eval()


def build_model_dir(family: str, path: str) -> str:
    """Save the tiny model, its tokenizer and its processor in `path` (created); returns `path`."""
    _check(family)
    os.makedirs(path, exist_ok=True)
    processor = build_processor(family)
    model = build_model(family, processor.tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
