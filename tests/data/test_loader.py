import csv
import json
import logging
import os

import pytest

from llamafactory.data.loader import get_dataset
from llamafactory.data.template import get_template
from llamafactory.extras.errors import ConfigError
from tests.conftest import IDENTITY, write_dataset


def args(tmp_path, folder, **data):
    from transformers import Seq2SeqTrainingArguments

    from llamafactory.hparams import DataArguments, ModelArguments

    model_args = ModelArguments(model_name_or_path="unused", cache_dir=str(tmp_path / "hf-cache"))
    defaults = dict(dataset="identity", dataset_dir=folder, cutoff_len=128, overwrite_cache=True)
    defaults.update(data)
    training = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    return model_args, DataArguments(**defaults), training


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
    assert "Dataset identity: dropped 1 of 21 rows: 1 no response (rows 20)" in caplog.text
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
    assert "Dataset identity: dropped 1 of 3 rows: 1 empty prompt (rows 1)" in caplog.text
    assert len(train) >= 1


SHAREGPT = [{"conversations": [{"from": "human", "value": f"question {i}"}, {"from": "gpt", "value": f"answer {i}"}]}
            for i in range(6)]


def two_datasets(tmp_path):
    folder = write_dataset(str(tmp_path / "data"), IDENTITY)
    return write_dataset(folder, SHAREGPT, name="chat", file_name="chat.jsonl",
                         entry={"formatting": "sharegpt", "columns": {"messages": "conversations"}})


def load(tmp_path, folder, stage="sft", **data):
    model_args, data_args, training = args(tmp_path, folder, **data)
    return get_dataset(get_template("chatml"), model_args, data_args, training, stage,
                       __import__("transformers").AutoTokenizer.from_pretrained(TINY[0]))


@pytest.fixture(autouse=True)
def _tiny(tiny_model_dir):
    TINY[:] = [tiny_model_dir]


TINY: list[str] = []


def test_mix_strategies(tmp_path):
    folder = two_datasets(tmp_path)
    assert len(load(tmp_path, folder, dataset="identity,chat")["train_dataset"]) == 10
    under = load(tmp_path, folder, dataset="identity,chat", mix_strategy="interleave_under")["train_dataset"]
    assert len(under) == 8  # alternate until the 4-row dataset runs out
    over = load(tmp_path, folder, dataset="identity,chat", mix_strategy="interleave_over")["train_dataset"]
    assert len(over) == 12
    with pytest.raises(ConfigError, match="`interleave_probs` has 3 values for 2 datasets"):
        load(tmp_path, folder, dataset="identity,chat", mix_strategy="interleave_under", interleave_probs="0.2,0.3,0.5")


def test_eval_on_each_dataset_and_tokenized_path(tmp_path):
    folder = two_datasets(tmp_path)
    saved = str(tmp_path / "tokenized")
    module = load(tmp_path, folder, dataset="identity", eval_dataset="identity,chat", eval_on_each_dataset=True,
                  tokenized_path=saved)
    assert set(module["eval_dataset"]) == {"identity", "chat"} and len(module["eval_dataset"]["chat"]) == 6
    (tmp_path / "data" / "identity.json").unlink()  # the saved copy no longer needs the source files
    again = load(tmp_path, folder, dataset="identity", eval_dataset="identity,chat", eval_on_each_dataset=True,
                 tokenized_path=saved)
    assert again["train_dataset"]["input_ids"] == module["train_dataset"]["input_ids"]
    assert set(again["eval_dataset"]) == {"identity", "chat"}


def test_second_run_reuses_the_tokenized_cache(tmp_path):
    folder = two_datasets(tmp_path)
    first = load(tmp_path, folder, dataset="chat", overwrite_cache=False)["train_dataset"]
    files = [f["filename"] for f in first.cache_files]
    stamps = [os.path.getmtime(f) for f in files]
    second = load(tmp_path, folder, dataset="chat", overwrite_cache=False)["train_dataset"]
    assert [f["filename"] for f in second.cache_files] == files
    assert [os.path.getmtime(f) for f in files] == stamps


def test_streaming_yields_tokenized_examples(tmp_path):
    folder = two_datasets(tmp_path)
    module = load(tmp_path, folder, dataset="chat", streaming=True, buffer_size=4, val_size=2)
    rows = list(module["train_dataset"])
    assert len(rows) == 4 and len(list(module["eval_dataset"])) == 2
    assert set(rows[0]) == {"input_ids", "attention_mask", "labels"}


def test_stage_and_data_must_match(tmp_path):
    folder = write_dataset(str(tmp_path / "data"), [{"instruction": "q", "chosen": "a", "rejected": "b"}],
                           entry={"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen",
                                                               "rejected": "rejected"}})
    with pytest.raises(ConfigError, match="dataset `identity` is ranking data .* stage `sft` needs ordinary"):
        load(tmp_path, folder)


def test_malformed_json_names_file_and_line(tmp_path):
    folder = write_dataset(str(tmp_path / "data"), IDENTITY)
    broken = '[\n  {"instruction": "q", "output": "a"},\n  {"instruction": }\n]'
    (tmp_path / "data" / "identity.json").write_text(broken)
    with pytest.raises(ConfigError, match=r"identity.json:3:\d+: JSON syntax error"):
        load(tmp_path, folder)


def test_no_valid_rows_names_the_most_common_reason(tmp_path):
    rows = [{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}] * 3
    folder = write_dataset(str(tmp_path / "data"), rows, entry={"formatting": "sharegpt"})
    with pytest.raises(ConfigError, match=r"dataset `identity` .* no valid rows: all 3 break the sharegpt format, "
                                          r"most often `wrong role order` \(rows 0, 1, 2\)"):
        load(tmp_path, folder)


def test_hub_dataset_offline_fails_at_once(tmp_path):
    from llamafactory.extras.errors import UserError

    folder = str(tmp_path / "data")
    os.makedirs(folder)
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump({"remote": {"hf_hub_url": "someone/some-data"}}, f)
    with pytest.raises(UserError, match="dataset `remote`: cannot load `someone/some-data` from the hub"):
        load(tmp_path, folder, dataset="remote")


def test_modelscope_dataset_without_package_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    from llamafactory.extras.errors import UserError

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name == "modelscope":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    folder = str(tmp_path / "data")
    os.makedirs(folder)
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump({"remote": {"hf_hub_url": "a/b", "ms_hub_url": "c/d"}}, f)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(UserError, match="dataset `remote` is on ModelScope .*: `pip install modelscope`"):
        load(tmp_path, folder, dataset="remote")


def test_one_preprocessing_worker_means_the_main_process():
    """datasets 5 forks a pool even for num_proc=1; one worker must stay in the main process."""
    from types import SimpleNamespace

    from llamafactory.data.loader import worker_processes

    assert worker_processes(SimpleNamespace(preprocessing_num_workers=None)) is None
    assert worker_processes(SimpleNamespace(preprocessing_num_workers=1)) is None
    assert worker_processes(SimpleNamespace(preprocessing_num_workers=4)) == 4
