"""Self-check of the tiny multimodal test models: processor output runs through each model's forward."""

import math

import pytest

from tests.mm_models import FAMILIES, build_model, build_model_dir, build_processor, sample_batch

MEDIA_TOKEN = {"llava": "<image>", "llava_next": "<image>", "qwen2_vl": "<|image_pad|>", "qwen3_vl": "<|image_pad|>",
               "gemma3": "<image_soft_token>", "paligemma": "<image>", "mllama": "<|image|>",
               "qwen2_audio": "<|AUDIO|>"}


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_output_runs_through_the_model(family):
    import torch

    processor = build_processor(family)
    model = build_model(family, processor.tokenizer)
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)
    batch = sample_batch(family, processor)
    media_id = processor.tokenizer.convert_tokens_to_ids(MEDIA_TOKEN[family])
    assert (batch["input_ids"] == media_id).sum() >= 1, "the processor expanded no media tokens"
    with torch.no_grad():
        loss = model(**batch).loss.item()
        # the media reach the text: other pixels (or sound) change the loss
        for key in ("pixel_values", "input_features"):
            if key in batch:
                batch[key] = torch.randn_like(batch[key])
        other = model(**batch).loss.item()
    assert math.isfinite(loss) and loss != other


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_loads_back(family, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    path = build_model_dir(family, str(tmp_path / family))
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    assert config.get_text_config().vocab_size == len(tokenizer)
    for name, token in build_processor(family).tokenizer.special_tokens_map.items():
        if name.endswith("_token") and isinstance(token, str):
            assert getattr(tokenizer, name) == token
