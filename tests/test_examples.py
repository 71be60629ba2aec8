"""Every example config parses (keys, types, combinations) as `lmf train` / `lmf chat` would read it."""

import glob
import os

import pytest

from llamafactory.hparams.parser import get_infer_args, get_train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True)
               if "inference" not in p and "merge_lora" not in p)


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: os.path.relpath(p, ROOT))
def test_training_example_parses(path, tmp_path):
    get_train_args([path, f"output_dir={tmp_path / 'out'}"])


@pytest.mark.parametrize("name", ["smollm2_lora_sft.yaml", "smollm2_lora_reward.yaml"])
def test_inference_example_parses(name):
    get_infer_args([os.path.join(ROOT, "examples", "inference", name)])


def test_there_is_an_example_for_each_method():
    names = " ".join(TRAIN)
    for part in ("train_full", "train_lora", "pretrain", "freeze", "oft", "dora", "pissa", "loraplus", "galore",
                 "llama_pro", "neftune", "qlora"):
        assert part in names, part
