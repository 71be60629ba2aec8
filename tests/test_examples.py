"""Every example config parses (keys, types, combinations) as `lmf train` / `lmf chat` would read it."""

import glob
import importlib.util
import json
import os

import pytest
import torch
import yaml

from llamafactory.hparams.parser import get_infer_args, get_train_args, read_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True)
               if not any(part in p for part in ("inference", "merge_lora", os.path.join("examples", "accelerate"),
                                                 os.path.join("examples", "eval"))))  # tests/eval parses these


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: os.path.relpath(p, ROOT))
def test_training_example_parses(path, tmp_path):
    argv = [path, f"output_dir={tmp_path / 'out'}"]
    deepspeed = read_args([path])[0].get("deepspeed")
    if deepspeed and (importlib.util.find_spec("deepspeed") is None or not torch.cuda.is_available()):
        # Without the package (or a GPU) the parser refuses `deepspeed` by design; check every other key, and that
        # the DeepSpeed config it names is there and is JSON.
        with open(os.path.join(ROOT, deepspeed), encoding="utf-8") as f:
            assert "zero_optimization" in json.load(f)
        argv.append("deepspeed=null")
    get_train_args(argv)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "examples", "accelerate", "*.yaml"))))
def test_accelerate_configs_are_fsdp_configs(path):
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] in (1, 2)


@pytest.mark.parametrize("name", ["smollm2_lora_sft.yaml", "smollm2_lora_reward.yaml", "qwen2_5vl.yaml"])
def test_inference_example_parses(name):
    get_infer_args([os.path.join(ROOT, "examples", "inference", name)])


def test_there_is_an_example_for_each_method():
    names = " ".join(TRAIN)
    for part in ("train_full", "train_lora", "pretrain", "freeze", "oft", "dora", "pissa", "loraplus", "galore",
                 "llama_pro", "neftune", "qlora"):
        assert part in names, part
