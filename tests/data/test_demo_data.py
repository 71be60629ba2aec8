"""The demo sets shipped in data/ load cleanly, each for the stage it was written for."""

import logging
import os

import pytest

from llamafactory.data.loader import get_dataset
from llamafactory.data.parser import get_dataset_list
from llamafactory.data.template import get_template
from tests.data.test_loader import args

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
SETS = {
    "identity": ("sft", 90), "alpaca_en_demo": ("sft", 300), "alpaca_zh_demo": ("sft", 100),
    "sharegpt_multiturn_demo": ("sft", 60), "toolcall_en_demo": ("sft", 40), "openai_toolcall_demo": ("sft", 30),
    "dpo_en_demo": ("dpo", 100), "kto_en_demo": ("kto", 100), "c4_demo": ("pt", 300),
}


def test_every_registered_demo_set_is_covered():
    assert {a.name for a in get_dataset_list(",".join(SETS), DATA)} == set(SETS)


@pytest.mark.parametrize("name", sorted(SETS))
def test_demo_set_loads_without_dropping_rows(tmp_path, tiny_tokenizer, caplog, name):
    stage, minimum = SETS[name]
    model_args, data_args, training = args(tmp_path, DATA, dataset=name, cutoff_len=1024)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        module = get_dataset(get_template("qwen"), model_args, data_args, training, stage, tiny_tokenizer)
    train = module["train_dataset"]
    assert "dropped" not in caplog.text.lower(), caplog.text
    if stage != "pt":
        assert len(train) >= minimum
    else:
        assert sum(len(ids) for ids in train["input_ids"]) > 300 * 40
