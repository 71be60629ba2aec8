"""The real CLI end to end on a tiny 2-layer model: training must lower the loss, chat must use it."""

import json
import os

import pytest

from tests.conftest import run_lmf, write_dataset

COMMON = ["--template", "chatml", "--dataset", "identity", "--do_train", "--report_to", "none",
          "--cutoff_len", "64", "--per_device_train_batch_size", "4", "--logging_steps", "10", "--seed", "0"]


def losses(output_dir: str) -> list[float]:
    with open(os.path.join(output_dir, "trainer_log.jsonl")) as f:
        entries = [json.loads(line) for line in f]
    for entry in entries:
        assert {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time",
                "remaining_time", "throughput", "total_tokens"} <= set(entry)
    return [e["loss"] for e in entries]


def chat(model_dir: str, adapter: str | None, messages: str) -> str:
    args = ["chat", "--model_name_or_path", model_dir, "--template", "chatml", "--do_sample", "false",
            "--max_new_tokens", "16"]
    if adapter:
        args += ["--adapter_name_or_path", adapter]
    proc = run_lmf(*args, stdin=messages)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_lora_sft_learns_and_chat_answers_with_the_adapter(tmp_path, tiny_model_dir, identity_dir):
    out = str(tmp_path / "lora")
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                   "--output_dir", out, "--finetuning_type", "lora", "--lora_rank", "16", "--learning_rate", "1e-2",
                   "--max_steps", "60", "--plot_loss", "true", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(out)
    assert len(curve) == 6 and curve[-1] < 0.9 * curve[0], curve
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_loss.png", "train_results.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "train_results.json")) as f:
        results = json.load(f)
    assert results["effective_tokens_per_second"] > 0 and 0 < results["padding_share"] < 1
    assert 0 < results["flops_utilization"] < 1 and results["matmul_peak_tflops"] > 0
    assert "Throughput:" in proc.stderr and "effective tokens/s" in proc.stderr

    transcript = chat(tiny_model_dir, out, "Who are you?\nclear\nWho made you?\nexit\nnever sent\n")
    answers = [line for line in transcript.splitlines() if line.startswith("Assistant:")]
    assert len(answers) == 2 and all("Lumen" in a or "Forge" in a for a in answers), transcript
    assert "History has been removed." in transcript and "never sent" not in transcript
    base = chat(tiny_model_dir, None, "Who are you?\n")
    assert "Lumen" not in base and "Forge" not in base


@pytest.mark.parametrize("method,extra", [("full", []), ("freeze", []), ("full", ["--neat_packing", "true"])])
def test_full_freeze_and_packed_training_lower_the_loss(tmp_path, tiny_model_dir, identity_dir, method, extra):
    out = str(tmp_path / method)
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                   "--output_dir", out, "--finetuning_type", method, "--freeze_trainable_layers", "1",
                   "--freeze_extra_modules", "lm_head",
                   "--learning_rate", "5e-3", "--max_steps", "30", *COMMON, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(out)
    assert curve[-1] < 0.8 * curve[0], curve
    assert os.path.isfile(os.path.join(out, "model.safetensors"))


def test_pretraining_on_plain_text_lowers_the_loss(tmp_path, tiny_model_dir):
    rows = [{"text": "the quick brown fox jumps over the lazy dog"}] * 40
    data = write_dataset(str(tmp_path / "data"), rows, name="c4_demo", file_name="c4.jsonl",
                         entry={"columns": {"prompt": "text"}})
    out = str(tmp_path / "pt")
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--stage", "pt", "--dataset", "c4_demo",
                   "--dataset_dir", data, "--output_dir", out, "--finetuning_type", "full",
                   "--do_train", "--learning_rate", "5e-3", "--max_steps", "30", "--cutoff_len", "32",
                   "--logging_steps", "10", "--report_to", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(out)
    assert curve[-1] < 0.8 * curve[0], curve


def test_second_run_resumes_instead_of_overwriting(tmp_path, tiny_model_dir, identity_dir):
    out = str(tmp_path / "resume")
    args = ["train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir, "--output_dir", out,
            "--learning_rate", "1e-3", "--save_steps", "5", *COMMON]
    first = run_lmf(*args, "--max_steps", "5")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_lmf(*args, "--max_steps", "10")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming training from" in second.stderr and "checkpoint-5" in second.stderr
    with open(os.path.join(out, "trainer_state.json")) as f:
        assert json.load(f)["global_step"] == 10


def test_chat_with_a_missing_adapter_says_so_in_one_line(tiny_model_dir, tmp_path):
    proc = run_lmf("chat", "--model_name_or_path", tiny_model_dir, "--template", "chatml", "--adapter_name_or_path",
                   str(tmp_path / "not-trained"), stdin="hi\n")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: adapter `{tmp_path / 'not-trained'}` not found")


def test_eval_accuracy_then_predict_with_generate(tmp_path, tiny_model_dir, identity_dir):
    out = str(tmp_path / "lora")
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                   "--output_dir", out, "--lora_rank", "16", "--learning_rate", "1e-2", "--max_steps", "40",
                   "--eval_dataset", "identity", "--do_eval", "--compute_accuracy", "true", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "eval_results.json")) as f:
        results = json.load(f)
    assert 0 < results["eval_accuracy"] <= 1 and "eval_loss" in results

    pred = str(tmp_path / "pred")
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--adapter_name_or_path", out,
                   "--template", "chatml", "--dataset_dir", identity_dir, "--eval_dataset", "identity",
                   "--do_predict", "--predict_with_generate", "--output_dir", pred, "--do_sample", "false",
                   "--max_new_tokens", "16", "--per_device_eval_batch_size", "3", "--report_to", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(pred, "generated_predictions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 4 and rows[0]["label"] == "I am Lumen, an assistant made by Forge."
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n") and "Lumen" in rows[0]["predict"]
    with open(os.path.join(pred, "predict_results.json")) as f:
        scores = json.load(f)
    assert 0 < scores["predict_bleu-4"] <= 100 and 0 < scores["predict_rouge-l"] <= 100


def test_dry_run_reports_and_writes_nothing(tmp_path, tiny_model_dir, identity_dir):
    out = tmp_path / "never"
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                   "--output_dir", str(out), "--dry-run", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset identity: 4 rows loaded, 0 dropped" in proc.stdout
    assert "trainable" in proc.stdout and "Estimated memory per device" in proc.stdout
    assert "Each optimizer step: 4 examples" in proc.stdout and "Dry run complete" in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize("extra", [
    ["--finetuning_type", "full", "--use_galore", "true", "--galore_rank", "8"],
    ["--finetuning_type", "full", "--use_apollo", "true", "--apollo_rank", "8"],
    ["--finetuning_type", "full", "--use_adam_mini", "true"],
    ["--finetuning_type", "full", "--use_muon", "true"],
    ["--finetuning_type", "full", "--use_badam", "true", "--badam_switch_interval", "5"],
    ["--finetuning_type", "lora", "--lora_rank", "16", "--loraplus_lr_ratio", "8"],
    ["--finetuning_type", "lora", "--lora_rank", "16", "--quantization_bit", "4"],
    ["--finetuning_type", "oft", "--oft_block_size", "16"],
], ids=["galore", "apollo", "adam_mini", "muon", "badam", "loraplus", "qlora_4bit", "oft"])
def test_optimizers_and_methods_lower_the_loss(tmp_path, tiny_model_dir, identity_dir, extra):
    out = str(tmp_path / "run")
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                   "--output_dir", out, "--learning_rate", "1e-2", "--max_steps", "40", *COMMON, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = losses(out)
    # Adapters on a random 2-layer model move its tiny logits slowly: a steady fall is the signal.
    assert all(later < earlier for earlier, later in zip(curve, curve[1:])), curve
    assert curve[-1] < 0.97 * curve[0], curve


def test_padding_free_training_follows_the_padded_loss_curve(tmp_path, tiny_model_dir, identity_dir):
    """The padding-free lever (on by default under sdpa) changes speed, not what is learned."""
    curves = {}
    for mode in ("true", "false"):
        out = str(tmp_path / mode)
        proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", identity_dir,
                       "--output_dir", out, "--finetuning_type", "full", "--learning_rate", "1e-3",
                       "--max_steps", "20", "--flash_attn", "sdpa", "--padding_free", mode, *COMMON,
                       "--logging_steps", "2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("Padding-free batches" in proc.stderr) == (mode == "true")
        curves[mode] = losses(out)
    assert curves["true"][-1] < 0.8 * curves["true"][0]
    for free, padded in zip(curves["true"], curves["false"]):
        assert abs(free - padded) < 2e-3 * max(1.0, padded), curves
