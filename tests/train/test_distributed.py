"""Multi-process training on this CPU (gloo): the torchrun launch, rank-0 outputs, synchronised weights, failures.

The real `lmf train` is run under FORCE_TORCHRUN=1; checks that need to look inside each rank run a small worker
script (written to tmp_path) through the launcher's own torchrun command, with a callback that records what each
rank holds after training.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from llamafactory import launcher
from llamafactory.extras.errors import ConfigError
from tests.conftest import IDENTITY, run_lmf, write_dataset

TORCHRUN_TIMEOUT = 300  # a hang would otherwise stall the suite; a healthy run takes ~20 s on 2 cores


def _clear_launch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_TORCHRUN", "LOCAL_RANK", "RANK", *launcher.envs.TORCHRUN_VARIABLES):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------ launch settings
def test_no_launch_without_force_torchrun_on_a_cpu(monkeypatch):
    _clear_launch_env(monkeypatch)
    assert launcher.plan_launch() is None


def test_force_torchrun_on_one_node_picks_a_free_port(monkeypatch):
    _clear_launch_env(monkeypatch)
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    plan = launcher.plan_launch()
    assert plan is not None and plan.nproc_per_node == 1 and plan.nnodes == 1 and plan.master_addr == "127.0.0.1"
    assert plan.master_port > 0 and plan.max_restarts == 0
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    cmd = launcher.plan_launch().command(["cfg.yaml", "lr=1"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-4:] == ["-m", "llamafactory.launcher", "cfg.yaml",
                                                                         "lr=1"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2" and cmd[cmd.index("--nnodes") + 1] == "1"


def test_multi_node_and_elastic_settings(monkeypatch):
    _clear_launch_env(monkeypatch)
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        launcher.plan_launch()
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    cmd = launcher.plan_launch().command(["cfg.yaml"])
    assert cmd[cmd.index("--master-port") + 1] == "29500" and cmd[cmd.index("--node-rank") + 1] == "1"
    monkeypatch.setenv("MIN_NNODES", "1")
    monkeypatch.setenv("MAX_NNODES", "3")
    monkeypatch.setenv("RDZV_ID", "job7")
    monkeypatch.setenv("MASTER_PORT", "29400")
    cmd = launcher.plan_launch().command(["cfg.yaml"])
    assert cmd[cmd.index("--nnodes") + 1] == "1:3" and cmd[cmd.index("--rdzv-backend") + 1] == "c10d"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "10.0.0.1:29400" and cmd[cmd.index("--rdzv-id") + 1] == "job7"
    assert cmd[cmd.index("--max-restarts") + 1] == "3" and "--node-rank" not in cmd
    monkeypatch.setenv("MAX_RESTARTS", "0")
    assert launcher.plan_launch().max_restarts == 0
    monkeypatch.setenv("MIN_NNODES", "4")
    with pytest.raises(ConfigError, match="MIN_NNODES=4 is larger than MAX_NNODES=3"):
        launcher.plan_launch()


def test_bad_settings_and_workers_never_relaunch(monkeypatch):
    _clear_launch_env(monkeypatch)
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NPROC_PER_NODE", "two")
    with pytest.raises(ConfigError, match="NPROC_PER_NODE must be a whole number, got 'two'"):
        launcher.plan_launch()
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside a torchrun worker
    assert launcher.plan_launch() is None


# ---------------------------------------------------------------------------------------- through `lmf`
def _argv(model: str, data: str, out: str, batch: int, *extra: str) -> list[str]:
    return ["--model_name_or_path", model, "--template", "chatml", "--dataset", "identity", "--dataset_dir", data,
            "--do_train", "--output_dir", out, "--max_steps", "6", "--logging_steps", "1", "--learning_rate", "5e-3",
            "--lora_rank", "8", "--per_device_train_batch_size", str(batch), "--cutoff_len", "64", "--seed", "7",
            "--report_to", "none", "--disable_shuffling", "--save_strategy", "no", *extra]


@pytest.fixture
def data16(tmp_path) -> str:
    return write_dataset(str(tmp_path / "data"), IDENTITY * 4)  # 16 rows: 4 optimizer steps per epoch


def _log(out: str) -> list[dict]:
    with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_dry_run_with_force_torchrun_spawns_nothing(tmp_path, tiny_model_dir, data16):
    out = str(tmp_path / "out")
    proc = run_lmf("train", *_argv(tiny_model_dir, data16, out, 2), "--dry-run",
                   env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}, timeout=TORCHRUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "A real run launches 2 process(es) in all" in proc.stdout and "torch.distributed.run" in proc.stdout
    assert "Launching" not in proc.stderr and not os.path.exists(out)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, tiny_model_dir, data16):
    """2 processes x 2 rows and 1 process x 4 rows see the same examples per step: same losses, same adapter."""
    from safetensors.torch import load_file

    single, double = str(tmp_path / "single"), str(tmp_path / "double")
    one = run_lmf("train", *_argv(tiny_model_dir, data16, single, 4),
                  env={"HF_DATASETS_CACHE": str(tmp_path / "cache1")}, timeout=TORCHRUN_TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_lmf("train", *_argv(tiny_model_dir, data16, double, 2, "--plot_loss"),
                  env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "HF_DATASETS_CACHE": str(tmp_path / "cache2")},
                  timeout=TORCHRUN_TIMEOUT)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Launching 2 process(es)" in two.stderr
    # Rank 0 tokenized the data; rank 1 waited and loaded rank 0's cache instead of processing it again.
    assert two.stderr.count("Running tokenizer on training dataset: 100%") == 1

    log_one, log_two = _log(single), _log(double)
    assert [e["current_steps"] for e in log_two] == [1, 2, 3, 4, 5, 6]  # one writer: no doubled lines
    assert log_two[0]["epoch"] == pytest.approx(0.25)  # 16 rows / (2 per process x 2 processes) = 4 steps an epoch
    losses_one, losses_two = [e["loss"] for e in log_one], [e["loss"] for e in log_two]
    assert losses_two[-1] < losses_two[0]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    a = load_file(os.path.join(single, "adapter_model.safetensors"))
    b = load_file(os.path.join(double, "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-5, name
    assert os.path.getsize(os.path.join(double, "training_loss.png")) > 0
    assert sorted(n for n in os.listdir(double) if n.endswith(".png")) == ["training_loss.png"]
    with open(os.path.join(double, "train_results.json"), encoding="utf-8") as f:
        assert json.load(f)["train_loss"] > 0  # valid JSON: written once, not interleaved by two writers


# -------------------------------------------------------------------------------- inside each rank
PROBE = '''
import hashlib, json, os, sys

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from llamafactory import launcher
from llamafactory.train import tuner


class Probe(TrainerCallback):
    """Records what this rank holds after training; raises on the rank named by PROBE_FAIL_RANK."""

    def on_step_end(self, args, state, control, **kwargs):
        if os.environ.get("PROBE_FAIL_RANK") == str(dist.get_rank()) and state.global_step == 2:
            raise RuntimeError(f"probe failure on rank {dist.get_rank()}")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest, sharded = hashlib.sha256(), False
        for name, param in sorted(model.named_parameters()):
            if not param.requires_grad:
                continue
            tensor = param.detach()
            if hasattr(tensor, "full_tensor"):  # FSDP2 shards each weight as a DTensor
                sharded, tensor = True, tensor.full_tensor()
            digest.update(name.encode() + tensor.float().cpu().numpy().tobytes())
        record = {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": dist.get_backend(),
                  "args_world_size": args.world_size, "digest": digest.hexdigest(), "sharded": sharded}
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{dist.get_rank()}.json"), "w") as f:
            json.dump(record, f)


original = tuner.run_exp
tuner.run_exp = lambda argv, callbacks=None, dry_run=False: original(argv, [*(callbacks or []), Probe()], dry_run)
sys.exit(launcher.worker_main(sys.argv[1:]))
'''

PARENT = '''
import sys
from llamafactory import launcher

plan = launcher.LaunchPlan(nnodes=1, node_rank=0, nproc_per_node=2, master_addr="127.0.0.1",
                           master_port=launcher._free_port(), max_restarts=0)
sys.exit(launcher._run_torchrun(plan.command(sys.argv[2:], entry=[sys.argv[1]])))
'''


def _launch_probe(tmp_path, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """The launcher's own torchrun command and exit-status path, with the probe script as each worker."""
    script = tmp_path / "probe_worker.py"
    script.write_text(textwrap.dedent(PROBE))
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir(exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe_dir), "PYTHONPATH": root, **env}
    return subprocess.run([sys.executable, "-c", PARENT, str(script), *argv], capture_output=True, text=True,
                          env=full_env, timeout=TORCHRUN_TIMEOUT)


def _records(tmp_path) -> list[dict]:
    return [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ranks_hold_identical_weights_over_gloo_and_share_one_tokenized_dataset(tmp_path, tiny_model_dir, data16):
    tokenized = str(tmp_path / "tokenized")
    proc = _launch_probe(tmp_path, _argv(tiny_model_dir, data16, str(tmp_path / "out"), 2, "--tokenized_path",
                                         tokenized))
    assert proc.returncode == 0, proc.stderr[-3000:]
    zero, one = _records(tmp_path)
    assert zero["backend"] == one["backend"] == "gloo"
    assert zero["world_size"] == one["world_size"] == zero["args_world_size"] == 2
    assert zero["digest"] == one["digest"]  # gradients were averaged: both ranks took the same optimizer steps
    assert proc.stderr.count("Tokenized dataset saved at") == 1  # rank 0 wrote it once ...
    assert proc.stderr.count("Loading the tokenized dataset from") == 1  # ... and rank 1 loaded it
    assert _log(str(tmp_path / "out"))[-1]["current_steps"] == 6


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.skipif(_gpus() < 2, reason="FSDP through accelerate needs 2 GPUs: on a CPU accelerate leaves the model "
                    "unsharded, so llamafactory refuses `fsdp` there (tests/hparams/test_parser.py)")
def test_fsdp_shards_full_tuning_over_two_gpus(tmp_path, tiny_model_dir, data16):
    """transformers' `fsdp` keys (FSDP2 through accelerate) shard the weights and train like one process."""
    from safetensors.torch import load_file

    fsdp = ["--finetuning_type", "full", "--learning_rate", "1e-3", "--fsdp", "full_shard auto_wrap", "--fsdp_config",
            '{"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}']
    out = str(tmp_path / "fsdp")
    proc = _launch_probe(tmp_path, _argv(tiny_model_dir, data16, out, 2, *fsdp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    zero, one = _records(tmp_path)
    assert zero["sharded"] and one["sharded"] and zero["digest"] == one["digest"]
    single = str(tmp_path / "single")
    plain = _argv(tiny_model_dir, data16, single, 4, "--finetuning_type", "full", "--learning_rate", "1e-3")
    assert run_lmf("train", *plain, env={"CUDA_VISIBLE_DEVICES": "0"}, timeout=TORCHRUN_TIMEOUT).returncode == 0
    assert [e["loss"] for e in _log(out)] == pytest.approx([e["loss"] for e in _log(single)], rel=1e-4)
    a = load_file(os.path.join(single, "model.safetensors"))
    b = load_file(os.path.join(out, "model.safetensors"))  # rank 0 gathered the shards into one full model
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].float() - b[name].float()).abs().max().item() < 1e-5, name


def test_a_failing_rank_ends_the_whole_job_with_its_error(tmp_path, tiny_model_dir, data16):
    proc = _launch_probe(tmp_path, _argv(tiny_model_dir, data16, str(tmp_path / "out"), 2), PROBE_FAIL_RANK="1")
    assert proc.returncode != 0
    assert "probe failure on rank 1" in proc.stderr
    assert not (tmp_path / "probe" / "rank0.json").exists()  # rank 0 was stopped, not left waiting


def test_use_mca_says_what_it_needs_instead_of_being_ignored(tmp_path, tiny_model_dir):
    from tests.conftest import run_lmf

    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset", "identity", "--do_train",
                   "--output_dir", str(tmp_path / "out"), env={"USE_MCA": "1"})
    assert proc.returncode == 1 and "USE_MCA=1 needs the mcore_adapter package" in proc.stderr
    assert not (tmp_path / "out").exists()
