"""Multimodal fine-tuning through the real CLI on tiny models: the project's own demo data (images, audio, video
frames) trains, the loss falls, the processor is saved, and the result chats about a picture."""

import json
import os

import pytest

from tests.conftest import run_lmf
from tests.e2e.test_train_chat import losses
from tests.mm_models import build_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "data")
COMMON = ["--do_train", "--report_to", "none", "--dataset_dir", DATA, "--cutoff_len", "256", "--seed", "0",
          "--per_device_train_batch_size", "2", "--logging_steps", "5", "--max_steps", "30", "--save_strategy", "no",
          "--overwrite_cache", "true"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    cache = {}

    def get(family: str) -> str:
        if family not in cache:
            cache[family] = build_model_dir(family, str(tmp_path_factory.mktemp(family)))
        return cache[family]

    return get


@pytest.mark.parametrize("family,dataset,method,extra", [
    ("qwen2_vl", "mllm_demo", "lora", ["--lora_rank", "8", "--learning_rate", "1e-2"]),
    ("qwen2_vl", "mllm_video_demo,mllm_demo", "full", ["--learning_rate", "5e-3", "--freeze_vision_tower", "false"]),
    ("qwen2_audio", "mllm_audio_demo", "lora", ["--lora_rank", "8", "--learning_rate", "1e-2"]),
    ("llava", "mllm_demo,identity", "freeze", ["--learning_rate", "1e-2", "--freeze_trainable_layers", "1"]),
])
def test_multimodal_sft_learns(tmp_path, model_dirs, family, dataset, method, extra):
    out = str(tmp_path / "out")
    proc = run_lmf("train", "--model_name_or_path", model_dirs(family), "--template", family, "--dataset", dataset,
                   "--finetuning_type", method, "--output_dir", out, *COMMON, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(out)
    assert len(curve) == 6 and curve[-1] < 0.8 * curve[0], curve
    # The processor travels with the result, so chat and export read media the way training did.
    assert os.path.isfile(os.path.join(out, "preprocessor_config.json")) or os.path.isfile(
        os.path.join(out, "processor_config.json")), os.listdir(out)


def test_lora_on_images_then_chat_about_a_picture(tmp_path, model_dirs):
    from PIL import Image

    from llamafactory.chat.chat_model import ChatModel

    model = model_dirs("qwen2_vl")
    out = str(tmp_path / "lora")
    proc = run_lmf("train", "--model_name_or_path", model, "--template", "qwen2_vl", "--dataset", "mllm_demo",
                   "--finetuning_type", "lora", "--lora_rank", "8", "--learning_rate", "1e-2", "--output_dir", out,
                   *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as f:
        adapted = list(f.keys())
    assert adapted and all("language_model" in k for k in adapted), adapted[:5]  # tower and projector stay out
    with open(os.path.join(DATA, "mllm_demo.json")) as f:
        row = json.load(f)[0]
    question = [m for m in row["messages"] if m["role"] == "user"][0]["content"]
    image = Image.open(os.path.join(DATA, row["images"][0]))
    tuned = ChatModel({"model_name_or_path": model, "adapter_name_or_path": out, "template": "qwen2_vl",
                       "do_sample": False, "max_new_tokens": 12})
    base = ChatModel({"model_name_or_path": model, "template": "qwen2_vl", "do_sample": False,
                      "max_new_tokens": 12})
    messages = [{"role": "user", "content": question}]
    answer = tuned.chat(messages, images=[image])[0]
    assert answer.response_length > 0
    assert answer.response_text != base.chat(messages, images=[image])[0].response_text  # the adapter is used


def test_two_processes_with_text_only_and_image_batches(tmp_path, model_dirs):
    """Over 2 processes (gloo), one rank often draws a text-only row while the other draws an image: with the
    vision tower trainable, DDP needs every rank to use it in every step, which the collator's masked dummy
    image ensures (without it the ranks disagree on which gradients exist and the run fails)."""
    out = str(tmp_path / "ddp")
    proc = run_lmf("train", "--model_name_or_path", model_dirs("qwen2_vl"), "--template", "qwen2_vl",
                   "--dataset", "mllm_demo,identity", "--max_samples", "8", "--finetuning_type", "full",
                   "--freeze_vision_tower", "false", "--learning_rate", "1e-3", "--output_dir", out,
                   "--do_train", "--report_to", "none", "--dataset_dir", DATA, "--cutoff_len", "256", "--seed", "0",
                   "--per_device_train_batch_size", "1", "--logging_steps", "2", "--max_steps", "8",
                   "--save_strategy", "no",
                   env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "HF_DATASETS_CACHE": str(tmp_path / "cache")},
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching 2 process(es)" in proc.stderr
    curve = losses(out)
    assert curve and curve[-1] < curve[0], curve
