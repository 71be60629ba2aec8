import json
import os

from llamafactory.train.tuner import run_exp


def test_warmup_stable_decay_needs_no_extra_settings(tmp_path, tiny_model_dir, identity_dir):
    out = str(tmp_path / "wsd")
    run_exp(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
             "--dataset_dir", identity_dir, "--do_train", "--output_dir", out, "--max_steps", "20",
             "--logging_steps", "1", "--learning_rate", "1e-3", "--lr_scheduler_type", "warmup_stable_decay",
             "--warmup_ratio", "0.2", "--report_to", "none"])
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        lrs = [json.loads(line)["lr"] for line in f]
    assert lrs[0] < lrs[3]  # warmup
    assert lrs[5] == lrs[10] == max(lrs)  # stable
    assert lrs[-1] < max(lrs)  # decay over the last steps
