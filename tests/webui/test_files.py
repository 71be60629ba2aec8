import json
import os

from llamafactory.webui.files import list_checkpoints, list_datasets, preview_dataset

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def test_datasets_are_listed_for_the_stage():
    sft = list_datasets(DATA, "sft")
    assert "identity" in sft and "alpaca_en_demo" in sft and "dpo_en_demo" not in sft
    assert list_datasets(DATA, "dpo") == ["dpo_en_demo"] and list_datasets(DATA, "rm") == ["dpo_en_demo"]
    assert list_datasets("/nonexistent", "sft") == []


def test_preview_shows_the_first_rows(tmp_path):
    total, rows, path = preview_dataset(DATA, "identity", limit=2)
    assert total == 90 and len(rows) == 2 and path.endswith("identity.json") and "instruction" in rows[0]
    total, rows, _ = preview_dataset(DATA, "c4_demo", limit=3)
    assert total > 3 and len(rows) == 3 and "text" in rows[0]
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "hub": {"hf_hub_url": "org/data"}, "gone": {"file_name": "gone.json"}, "table": {"file_name": "t.csv"}}))
    (tmp_path / "t.csv").write_text("instruction,output\nhi,hello\n")
    assert preview_dataset(str(tmp_path), "hub")[2] == "`hub` is loaded from org/data; only local files are previewed"
    assert preview_dataset(str(tmp_path), "gone")[2].startswith("file ") and preview_dataset(str(tmp_path), "x")[0] == 0
    assert preview_dataset(str(tmp_path), "table")[:2] == (1, [{"instruction": "hi", "output": "hello"}])


def test_checkpoint_picker_lists_runs_with_weights(tmp_path):
    base = tmp_path / "saves" / "tiny" / "lora"
    adapter = ["adapter_config.json"]
    for run, files in {"train_1": adapter, "train_2": ["training_args.yaml"], "train_2/checkpoint-5": adapter,
                       "train_2/checkpoint-10": adapter, "train_3": adapter}.items():
        (base / run).mkdir(parents=True, exist_ok=True)
        for name in files:
            (base / run / name).write_text("{}")
    found = list_checkpoints("Custom", "/models/tiny", "lora", root=str(tmp_path / "saves"))
    assert [label for label, _ in found] == ["train_3", "train_2/checkpoint-10", "train_2/checkpoint-5", "train_1"]
    assert found[0][1] == str(base / "train_3")
    assert list_checkpoints("Custom", "/models/tiny", "full", root=str(tmp_path / "saves")) == []
    full = tmp_path / "saves" / "tiny" / "full" / "train_1"
    full.mkdir(parents=True)
    (full / "config.json").write_text("{}")
    (full / "model.safetensors").write_text("")
    assert list_checkpoints("Custom", "/models/tiny", "full", root=str(tmp_path / "saves")) == [("train_1", str(full))]
