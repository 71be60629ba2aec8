"""Multimodal model side: which class loads, the processor and its settings, and what each freezing option
leaves trainable under full, freeze and LoRA tuning."""

import logging

import numpy as np
import pytest

from llamafactory.extras.errors import ConfigError
from llamafactory.hparams import FinetuningArguments, ModelArguments
from llamafactory.model.loader import load_model, load_processor, load_tokenizer
from llamafactory.model.model_utils import visual
from tests.mm_models import FAMILIES, build_model, build_model_dir, build_processor, sample_batch

# Expected (tower, projector) module paths per family in transformers 5's module tree.
WHERE = {
    "llava": ("model.vision_tower", "model.multi_modal_projector"),
    "qwen2_vl": ("model.visual", "model.visual.merger"),
    "qwen2_audio": ("model.audio_tower", "model.multi_modal_projector"),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    cache: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in cache:
            cache[family] = build_model_dir(family, str(tmp_path_factory.mktemp(family)))
        return cache[family]

    return get


def load(path, finetuning_type="full", trainable=True, gc=False, **options):
    import torch

    ft_keys = {f for f in FinetuningArguments.__dataclass_fields__}
    model_args = ModelArguments(model_name_or_path=path, disable_gradient_checkpointing=not gc,
                                **{k: v for k, v in options.items() if k not in ft_keys})
    finetuning_args = FinetuningArguments(finetuning_type=finetuning_type, lora_rank=2,
                                          **{k: v for k, v in options.items() if k in ft_keys})
    tokenizer = load_tokenizer(model_args)
    return load_model(tokenizer, model_args, finetuning_args, trainable, torch.float32)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def under(names, prefix):
    """Names under a module path (peft adds `base_model.model.` in front)."""
    return {n for n in names if n.split("base_model.model.", 1)[-1].startswith(prefix + ".")}


# ---------------------------------------------------------------- the data entries match transformers


@pytest.mark.parametrize("family", FAMILIES)
def test_every_part_entry_names_modules_of_the_model(family):
    processor = build_processor(family)
    model = build_model(family, processor.tokenizer)
    parts = visual.model_parts(model)
    assert parts is visual.MULTIMODAL_MODELS[model.config.model_type]
    names = dict(model.named_modules()) | dict(model.named_parameters())
    for path in parts.tower + parts.projector + parts.language_model:
        assert path in names, f"{family}: {path} is not in the model"
    # every parameter belongs to some part, and the embeddings to the language model
    owners = {n: visual.part_of(n, parts) for n, _ in model.named_parameters()}
    assert None not in owners.values(), [n for n, o in owners.items() if o is None]
    embed = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    assert owners[embed] == visual.LANGUAGE_MODEL
    assert {visual.TOWER, visual.PROJECTOR, visual.LANGUAGE_MODEL} <= set(owners.values())


def test_the_qwen2_5_vl_entry_names_modules_of_the_model():
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                       "fullatt_block_indexes": [0]},
        image_token_id=60, video_token_id=61, vision_start_token_id=62, vision_end_token_id=63)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    parts = visual.model_parts(model)
    modules = dict(model.named_modules())
    assert all(path in modules for path in parts.tower + parts.projector + parts.language_model)
    assert visual.part_of("model.visual.merger.mlp.0.weight", parts) == visual.PROJECTOR
    assert visual.part_of("model.visual.blocks.0.attn.qkv.weight", parts) == visual.TOWER


def test_is_multimodal_and_the_auto_class():
    import transformers
    from transformers import LlamaConfig

    text = LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    assert not visual.is_multimodal(text)
    assert visual.auto_model_class(text) is transformers.AutoModelForCausalLM
    processor = build_processor("mllama")
    from tests.mm_models import build_config

    config = build_config("mllama", processor.tokenizer)
    assert visual.is_multimodal(config)
    # AutoModelForCausalLM would load mllama's text part only
    assert visual.auto_model_class(config) is transformers.AutoModelForImageTextToText


# ---------------------------------------------------------------- loader: class and processor


@pytest.mark.parametrize("family,cls_name", [("llava", "LlavaForConditionalGeneration"),
                                             ("qwen2_vl", "Qwen2VLForConditionalGeneration"),
                                             ("mllama", "MllamaForConditionalGeneration"),
                                             ("qwen2_audio", "Qwen2AudioForConditionalGeneration")])
def test_loader_picks_the_multimodal_class(model_dirs, family, cls_name):
    model = load(model_dirs(family), trainable=False)
    assert type(model).__name__ == cls_name


def test_text_only_model_loads_as_causal_lm_and_has_no_processor(tiny_model_dir, caplog):
    model = load(tiny_model_dir, trainable=False)
    assert type(model).__name__ == "LlamaForCausalLM"
    model_args = ModelArguments(model_name_or_path=tiny_model_dir, image_max_pixels=1000)
    tokenizer = load_tokenizer(model_args)
    with caplog.at_level(logging.WARNING):
        assert load_processor(model_args, tokenizer) is None
    assert "image_max_pixels: ignored" in caplog.text


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl", "gemma3", "paligemma", "qwen2_audio"])
def test_load_processor_uses_our_tokenizer_and_the_settings(model_dirs, family):
    path = model_dirs(family)
    model_args = ModelArguments(model_name_or_path=path, image_max_pixels=4096, image_min_pixels=100,
                                image_do_pan_and_scan=True, video_max_pixels=2048, video_min_pixels=64,
                                video_fps=1.5, video_maxlen=8, audio_sampling_rate=8000,
                                add_special_tokens="<extra_tok>")
    tokenizer = load_tokenizer(model_args)
    processor = load_processor(model_args, tokenizer)
    assert processor is not None and processor.tokenizer is tokenizer
    assert processor.tokenizer.convert_tokens_to_ids("<extra_tok>") == len(tokenizer) - 1
    assert (processor.image_max_pixels, processor.image_min_pixels, processor.image_do_pan_and_scan) == \
        (4096, 100, True)
    assert (processor.video_max_pixels, processor.video_min_pixels, processor.video_fps, processor.video_maxlen) \
        == (2048, 64, 1.5, 8)
    assert processor.audio_sampling_rate == 8000
    expected = type(build_processor(family)).__name__
    assert type(processor).__name__ == expected
    if family == "qwen2_vl":  # built for images without torchvision's video processor: it still works
        from PIL import Image

        image = Image.fromarray(np.zeros((56, 56, 3), dtype=np.uint8))
        out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[image], return_tensors="pt")
        assert out["image_grid_thw"].tolist() == [[1, 4, 4]]
        assert (out["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum() == 4


def test_an_image_only_processor_saves_and_loads_back(model_dirs, tmp_path):
    import shutil

    path = model_dirs("qwen2_vl")
    model_args = ModelArguments(model_name_or_path=path)
    processor = load_processor(model_args, load_tokenizer(model_args))
    processor.save_pretrained(tmp_path)  # as a workflow saves it next to the trained model
    shutil.copy(f"{path}/config.json", tmp_path / "config.json")
    again_args = ModelArguments(model_name_or_path=str(tmp_path))
    again = load_processor(again_args, load_tokenizer(again_args))
    assert type(again).__name__ == "Qwen2VLProcessor"
    assert again.image_processor.merge_size == 2 and again.image_processor.patch_size == 14


# ---------------------------------------------------------------- freezing: full and freeze tuning


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_audio"])
def test_full_tuning_freezes_tower_and_projector_by_default(model_dirs, family):
    tower, projector = WHERE[family]
    model = load(model_dirs(family))
    names = trainable(model)
    assert not under(names, tower) and not under(names, projector)
    assert under(names, "model.language_model") and any(n.startswith("lm_head") for n in names)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_audio"])
def test_full_tuning_follows_each_option(model_dirs, family):
    tower, projector = WHERE[family]
    all_tower = {n for n, _ in load(model_dirs(family), trainable=False).named_parameters()
                 if n.startswith(tower + ".") and not n.startswith(projector + ".")}

    names = trainable(load(model_dirs(family), freeze_vision_tower=False))
    assert all_tower <= names and not under(names, projector)

    names = trainable(load(model_dirs(family), freeze_multi_modal_projector=False))
    assert under(names, projector) and not (all_tower & names)

    names = trainable(load(model_dirs(family), freeze_language_model=True, freeze_multi_modal_projector=False))
    assert names == under(names, projector)


def test_freeze_tuning_picks_language_model_layers_and_whole_media_parts(model_dirs):
    tower, projector = WHERE["llava"]
    names = trainable(load(model_dirs("llava"), "freeze", freeze_trainable_layers=1))
    assert names and all(n.startswith("model.language_model.layers.1.") for n in names)

    names = trainable(load(model_dirs("llava"), "freeze", freeze_trainable_layers=1, freeze_vision_tower=False))
    assert under(names, tower) == {n for n, _ in load(model_dirs("llava"), trainable=False).named_parameters()
                                   if n.startswith(tower + ".")}
    assert not under(names, projector)

    names = trainable(load(model_dirs("llava"), "freeze", freeze_language_model=True,
                           freeze_multi_modal_projector=False))
    assert names and names == under(names, projector)
    with pytest.raises(ConfigError, match="freeze_language_model"):
        load(model_dirs("llava"), "freeze", freeze_language_model=True)


# ---------------------------------------------------------------- LoRA


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_audio"])
def test_lora_all_adapts_only_the_language_model_by_default(model_dirs, family):
    tower, projector = WHERE[family]
    model = load(model_dirs(family), "lora")
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and lora == under(lora, "model.language_model")
    assert trainable(model) == lora


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_lora_all_adapts_an_unfrozen_tower_and_saves_a_trainable_projector(model_dirs, family):
    tower, projector = WHERE[family]
    model = load(model_dirs(family), "lora", freeze_vision_tower=False, freeze_multi_modal_projector=False)
    names = trainable(model)
    lora = {n for n in names if "lora_" in n}
    assert under(lora, tower) - under(lora, projector), "the unfrozen tower got no LoRA"
    assert under(lora, "model.language_model")
    assert not under(lora, projector), "the projector is trained in full, not adapted"
    saved = under(names, projector)
    assert saved and all("modules_to_save" in n for n in saved)
    assert names == lora | saved


def test_lora_with_frozen_language_model(model_dirs):
    tower, _ = WHERE["llava"]
    model = load(model_dirs("llava"), "lora", freeze_language_model=True, freeze_vision_tower=False)
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and lora == under(lora, tower)
    with pytest.raises(ConfigError, match="found no linear layer"):
        load(model_dirs("llava"), "lora", freeze_language_model=True)


def test_explicit_lora_targets_skip_the_frozen_tower(model_dirs):
    # CLIP's attention also has q_proj/v_proj: the frozen tower must not get adapters through shared names
    model = load(model_dirs("llava"), "lora", lora_target="q_proj,v_proj")
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and lora == under(lora, "model.language_model")


# ---------------------------------------------------------------- text-only models


def test_multimodal_options_on_a_text_only_model(tiny_model_dir, caplog):
    with pytest.raises(ConfigError, match="`freeze_language_model: true` needs a multimodal model"):
        load(tiny_model_dir, freeze_language_model=True)
    with caplog.at_level(logging.WARNING):
        model = load(tiny_model_dir, freeze_vision_tower=False)
    assert "freeze_vision_tower: false has no effect" in caplog.text
    assert trainable(model) == {n for n, _ in model.named_parameters()}


# ---------------------------------------------------------------- gradients reach an unfrozen tower


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_an_unfrozen_tower_gets_gradients_under_checkpointing(model_dirs, family):
    # The tower's patch embedding stays frozen under LoRA: its checkpointed layers only learn if their inputs
    # require grad (transformers hooks every sub-model's input embeddings; this guards that for each family).
    model = load(model_dirs(family), "lora", gc=True, freeze_vision_tower=False)
    parts = visual.model_parts(model.get_base_model())
    model.train()
    model(**sample_batch(family, build_processor(family))).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()
             if "lora_B" in n and any(under([n], t) for t in parts.tower)}
    assert grads, "no LoRA in the unfrozen tower"
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


def test_a_frozen_tower_gets_no_gradient(model_dirs):
    tower, _ = WHERE["llava"]
    model = load(model_dirs("llava"), "lora", gc=True)
    model.train()
    model(**sample_batch("llava", build_processor("llava"))).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if under([n], tower))
