from tests.conftest import IDENTITY, run_lmf, write_dataset


def test_data_preview_marks_trained_text_and_stats_count_everything(tmp_path, tiny_model_dir):
    data = write_dataset(str(tmp_path / "data"), IDENTITY + [{"instruction": "no answer", "input": "", "output": None}])
    common = ["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
              "--dataset_dir", data, "--cutoff_len", "25", "--per_device_train_batch_size", "2"]
    preview = run_lmf("data", "preview", *common, "-n", "1")
    assert preview.returncode == 0, preview.stderr[-2000:]
    assert "First 1 of 4 training examples" in preview.stdout
    assert "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n⟦I am Lumen" in preview.stdout
    assert "ids (* = trained):" in preview.stdout and "*" in preview.stdout.split("ids (* = trained):")[1]

    stats = run_lmf("data", "stats", *common)
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert "dataset identity: 5 rows loaded, 1 dropped (1 no response)" in stats.stdout
    assert "Examples that reach cutoff_len (truncated or packed full): 2 (50.0%)" in stats.stdout
    assert "Estimated padding at batch size 2" in stats.stdout

    wrong = run_lmf("data", "show", *common)
    assert wrong.returncode == 1 and "usage: lmf data preview|stats|tokenize" in wrong.stderr


def test_data_tokenize_saves_once_and_never_overwrites(tmp_path, tiny_model_dir):
    from datasets import load_from_disk

    data = write_dataset(str(tmp_path / "data"), IDENTITY)
    saved = str(tmp_path / "tokenized")
    common = ["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
              "--dataset_dir", data, "--cutoff_len", "25", "--learning_rate", "1e-4", "--tokenized_path", saved]
    looked = run_lmf("data", "stats", *common)
    assert looked.returncode == 0, looked.stderr[-2000:]
    assert not (tmp_path / "tokenized").exists()  # stats and preview only look

    first = run_lmf("data", "tokenize", *common, "--val_size", "0.25")
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"Saved 3 training and 1 evaluation examples to {saved}" in first.stdout
    on_disk = load_from_disk(saved)
    assert len(on_disk["train"]) == 3 and len(on_disk["validation"]) == 1
    assert all(len(ids) <= 25 for ids in on_disk["train"]["input_ids"])

    again = run_lmf("data", "tokenize", *common)
    assert again.returncode == 1 and "already exists and is not an empty folder" in again.stderr
    missing = run_lmf("data", "tokenize", *common[:-2])
    assert missing.returncode == 1 and "set it, e.g. tokenized_path=" in missing.stderr
