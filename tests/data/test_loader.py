import csv
import logging
from types import SimpleNamespace

import pytest

from llamafactory.data.loader import get_dataset
from llamafactory.data.template import get_template
from llamafactory.extras.errors import ConfigError
from tests.conftest import IDENTITY, write_dataset


def args(tmp_path, folder, **data):
    from transformers import Seq2SeqTrainingArguments

    model_args = SimpleNamespace(cache_dir=str(tmp_path / "hf-cache"))
    defaults = dict(dataset="identity", eval_dataset=None, dataset_dir=folder, cutoff_len=128, max_samples=None,
                    train_on_prompt=False, mask_history=False, preprocessing_num_workers=None,
                    preprocessing_batch_size=1000, overwrite_cache=True, val_size=0.0)
    defaults.update(data)
    training = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    return model_args, SimpleNamespace(**defaults), training


@pytest.mark.parametrize("file_name", ["identity.json", "identity.jsonl", "identity.csv"])
def test_local_file_types_load_and_tokenize(tmp_path, tiny_tokenizer, file_name):
    folder = str(tmp_path / "data")
    if file_name.endswith(".csv"):
        write_dataset(folder, [], file_name=file_name)
        with open(f"{folder}/{file_name}", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
            writer.writeheader()
            writer.writerows(IDENTITY)
    else:
        write_dataset(folder, IDENTITY, file_name=file_name)
    model_args, data_args, training = args(tmp_path, folder)
    module = get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)
    train = module["train_dataset"]
    assert len(train) == len(IDENTITY)
    first = tiny_tokenizer.decode([t for t in train[0]["labels"] if t != -100])
    assert first == IDENTITY[0]["output"] + "<|im_end|>\n"


def test_max_samples_val_size_and_dropped_rows_are_counted(tmp_path, tiny_tokenizer, caplog):
    rows = IDENTITY * 5 + [{"instruction": "no answer", "input": "", "output": None}]
    folder = write_dataset(str(tmp_path / "data"), rows)
    model_args, data_args, training = args(tmp_path, folder, val_size=0.25)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        module = get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)
    assert "Dropped 1 of 21 training examples" in caplog.text
    assert len(module["train_dataset"]) + len(module["eval_dataset"]) == 20
    assert len(module["eval_dataset"]) == 5
    model_args, data_args, training = args(tmp_path, folder, max_samples=3)
    module = get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)
    assert len(module["train_dataset"]) == 3


def test_missing_file_and_unsupported_type(tmp_path, tiny_tokenizer):
    folder = write_dataset(str(tmp_path / "data"), IDENTITY)
    (tmp_path / "data" / "identity.json").unlink()
    model_args, data_args, training = args(tmp_path, folder)
    with pytest.raises(ConfigError, match="dataset `identity`: file `.*identity.json` not found"):
        get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)
    folder = write_dataset(str(tmp_path / "d2"), IDENTITY, file_name="identity.xml")
    model_args, data_args, training = args(tmp_path, folder)
    with pytest.raises(ConfigError, match=r"`\.xml` files are not supported"):
        get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)


def test_num_samples_draws_with_repeats_and_max_samples_caps(tmp_path, tiny_tokenizer):
    folder = write_dataset(str(tmp_path / "data"), IDENTITY, entry={"num_samples": 10})
    model_args, data_args, training = args(tmp_path, folder)
    train = get_dataset(get_template("chatml"), model_args, data_args, training, "sft", tiny_tokenizer)["train_dataset"]
    assert len(train) == 10  # 4 rows up-weighted to 10, as in LlamaFactory
    answers = {tiny_tokenizer.decode([t for t in row["labels"] if t != -100]) for row in train}
    assert answers == {r["output"] + "<|im_end|>\n" for r in IDENTITY}
    model_args, data_args, training = args(tmp_path, folder, max_samples=6)
    assert len(get_dataset(get_template("chatml"), model_args, data_args, training, "sft",
                           tiny_tokenizer)["train_dataset"]) == 6


def test_pretraining_counts_empty_texts(tmp_path, tiny_tokenizer, caplog):
    rows = [{"text": "the quick brown fox"}, {"text": ""}, {"text": "jumps over the lazy dog"}]
    folder = write_dataset(str(tmp_path / "data"), rows, entry={"columns": {"prompt": "text"}})
    model_args, data_args, training = args(tmp_path, folder)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        train = get_dataset(None, model_args, data_args, training, "pt", tiny_tokenizer)["train_dataset"]
    assert "Dropped 1 of 3 training examples with empty text" in caplog.text
    assert len(train) >= 1
