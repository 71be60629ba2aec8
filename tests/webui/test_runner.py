"""Runs started from the page: the output folder check, a failing run's error, Stop keeping checkpoints, what an
overwrite or resume does with the earlier run's files, and no run outliving the page."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llamafactory.webui import runner as runner_module
from llamafactory.webui.args import UIError, run_dir, train_config
from llamafactory.webui.files import list_checkpoints
from llamafactory.webui.monitor import read_progress
from llamafactory.webui.runner import Runner, check_output_dir, error_line, wait_until_done


def refused(path, overwrite=False, resume=False):
    with pytest.raises(UIError) as info:
        check_output_dir(str(path), overwrite, resume)
    return info.value.key


def test_a_folder_with_results_is_refused_unless_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    check_output_dir(str(out), False, False)  # new: fine
    out.mkdir()
    (out / "training_args.yaml").write_text("x: 1\n")
    (out / "running_log.txt").write_text("failed early\n")
    check_output_dir(str(out), False, False)  # only the page's own files: a failed start can be retried
    (out / "adapter_model.safetensors").write_text("")
    assert refused(out) == "err_output_dir_not_empty"
    check_output_dir(str(out), True, False)
    assert refused(out, resume=True) == "err_no_checkpoint"
    assert refused(out, overwrite=True, resume=True) == "err_overwrite_and_resume"
    (out / "checkpoint-10").mkdir()
    check_output_dir(str(out), False, True)
    assert refused(tmp_path / "missing", resume=True) == "err_no_checkpoint"
    (tmp_path / "file").write_text("")
    assert refused(tmp_path / "file") == "err_not_a_folder"


def test_error_line_finds_why_a_run_failed():
    assert error_line("loading\nerror: in cfg.yaml: unknown key `x`\n") == "error: in cfg.yaml: unknown key `x`"
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: out of memory\n"
    assert error_line(trace) == "RuntimeError: out of memory"
    assert error_line("") == ""


def test_a_failing_run_reports_its_error_and_exit_status(tmp_path):
    runner = Runner(cwd=str(tmp_path))
    cfg = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "lora_rnak": 8, "output_dir": "out"}
    path = runner.start("train", "train", cfg, str(tmp_path / "out"), "training_args.yaml")
    with pytest.raises(UIError, match="in progress"):
        runner.start("train", "train", cfg, str(tmp_path / "out2"), "training_args.yaml")
    status = wait_until_done(runner, timeout=120)
    assert status.state == "failed" and status.returncode == 1
    assert status.error == f"error: in {path}: unknown key `lora_rnak`; did you mean `lora_rank`?"
    assert status.log.startswith(f"$ lmf train {path}") and status.error in status.log
    assert open(path).read().startswith("model_name_or_path: m\n")


def test_stop_ends_a_run_and_keeps_its_checkpoints(tmp_path, tiny_model_dir, identity_dir):
    runner = Runner(cwd=str(tmp_path), grace_s=60)
    out = run_dir("Custom", tiny_model_dir, "lora", "train", when="t", root=str(tmp_path / "saves"))
    cfg = train_config({"model_name": "Custom", "model_name_or_path": tiny_model_dir, "template": "chatml",
                        "dataset_dir": identity_dir, "dataset": ["identity"], "cutoff_len": 64,
                        "per_device_train_batch_size": 2, "max_steps": 500, "save_steps": 2, "logging_steps": 1,
                        "learning_rate": "1e-3", "precision": "fp32", "output_dir": out})
    check_output_dir(out, False, False)
    runner.start("train", "train", cfg, out, "training_args.yaml")
    checkpoint = os.path.join(out, "checkpoint-2", "adapter_model.safetensors")
    deadline = time.time() + 180
    while not os.path.exists(checkpoint) and runner.running and time.time() < deadline:
        time.sleep(0.3)
    assert os.path.exists(checkpoint), runner.status().log[-3000:]
    time.sleep(1)  # let the checkpoint's files finish writing
    assert runner.stop()
    status = wait_until_done(runner, timeout=120)
    assert status.state == "stopped" and status.returncode != 0, status.log[-3000:]
    assert os.path.exists(checkpoint) and read_progress(out).losses
    assert read_progress(out).current < 500
    labels = [label for label, _ in list_checkpoints("Custom", tiny_model_dir, "lora", root=str(tmp_path / "saves"))]
    assert "train_t/checkpoint-2" in labels
    with pytest.raises(UIError):
        check_output_dir(out, False, False)
    check_output_dir(out, False, True)  # resume is offered: the next Start continues from the last checkpoint
    assert runner.stop() is False


def test_evaluate_predict_and_export_configs_run(tmp_path, tiny_model_dir, identity_dir):
    from llamafactory.webui.args import eval_config, export_config

    runner = Runner(cwd=str(tmp_path))
    top = {"model_name": "Custom", "model_name_or_path": tiny_model_dir, "template": "chatml"}
    out = str(tmp_path / "eval")
    cfg = eval_config({**top, "dataset_dir": identity_dir, "dataset": ["identity"], "cutoff_len": 64,
                       "max_samples": 3, "predict": True, "max_new_tokens": 4, "temperature": 0, "output_dir": out})
    runner.start("eval", "train", cfg, out, "eval_args.yaml")
    status = wait_until_done(runner, timeout=180)
    assert status.state == "finished", status.log[-3000:]
    assert os.path.isfile(os.path.join(out, "generated_predictions.jsonl"))
    export_dir = str(tmp_path / "exported")
    cfg = export_config({**top, "export_dir": export_dir, "export_size": 1})
    runner.start("export", "export", cfg, str(tmp_path / "export_run"), "export_args.yaml")
    status = wait_until_done(runner, timeout=180)
    assert status.state == "finished", status.log[-3000:]
    assert os.path.isfile(os.path.join(export_dir, "config.json"))
    assert any(name.endswith(".safetensors") for name in os.listdir(export_dir))


# ------------------------------------------------------------------------------------ stand-ins for `lmf`
# A launcher replaces `python -m llamafactory.cli`: it is run as `<launcher> <command> <yaml>`.
SLEEPER = textwrap.dedent("""\
    import signal, subprocess, sys, time
    if DEAF:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a run that ignores Ctrl-C and SIGTERM: only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # e.g. a torchrun worker
    print("child", child.pid, flush=True)
    time.sleep(600)
""")


def sleeper(deaf: bool = False) -> list[str]:
    return [sys.executable, "-c", f"DEAF = {deaf}\n" + SLEEPER]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def run_pids(runner: Runner, timeout: float = 30) -> tuple[int, int]:
    """The run's own pid and its child's, once the child is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in open(runner.log_path).read().splitlines():
            if line.startswith("child "):
                return runner.proc.pid, int(line.split()[1])
        time.sleep(0.1)
    raise AssertionError(open(runner.log_path).read())


def gone(pids, timeout: float = 5) -> bool:
    deadline = time.time() + timeout
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


CFG = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "output_dir": "out"}


def test_the_shutdown_hook_ends_runs_and_their_children(tmp_path):
    runner = Runner(cwd=str(tmp_path), launcher=sleeper(deaf=True))
    runner.start("train", "train", CFG, str(tmp_path / "out"), "training_args.yaml")
    pids = run_pids(runner)
    assert all(alive(pid) for pid in pids)
    began = time.time()
    runner_module.shutdown_all(waits=(0.5, 0.5, 5.0))  # what atexit and the signal handlers call
    assert gone(pids, timeout=1), "a run outlived the page"
    assert time.time() - began < 5 and runner.status().state == "stopped"
    assert sum(runner_module.SHUTDOWN_S) < 10  # the page's exit waits at most this long


SERVE = textwrap.dedent("""\
    import sys, time
    from llamafactory.webui.runner import Runner, install_signal_handlers
    runner = Runner(launcher={launcher!r})
    runner.start("train", "train", {{"output_dir": "out"}}, {out!r}, "training_args.yaml")
    while "child" not in open(runner.log_path).read():
        time.sleep(0.1)
    child = int(open(runner.log_path).read().split("child ")[1].split()[0])
    if sys.argv[1] == "signal":
        install_signal_handlers()
    print("ready", runner.proc.pid, child, flush=True)
    if sys.argv[1] == "exit":
        sys.stdin.readline()  # exit only once the test has seen the run alive
    if sys.argv[1] == "signal":
        try:
            while True:  # as gradio's launch() blocks
                time.sleep(0.1)
        except KeyboardInterrupt:
            print("server closed", flush=True)
""")


@pytest.mark.parametrize("how", ["signal", "exit"])
def test_a_run_ends_with_the_page(tmp_path, how):
    """SIGTERM to the page (its signal handler), or the page's process simply ending (atexit), ends the run."""
    script = SERVE.format(launcher=sleeper(), out=str(tmp_path / "out"))
    page = subprocess.Popen([sys.executable, "-c", script, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        line = page.stdout.readline()
        assert line.startswith("ready"), line
        pids = [int(p) for p in line.split()[1:]]
        assert all(alive(pid) for pid in pids)
        if how == "exit":
            page.stdin.write("go\n")
            page.stdin.flush()
        if how == "signal":
            page.send_signal(signal.SIGTERM)
        page.wait(timeout=15)
        assert gone(pids), "a run outlived the page"
        if how == "signal":
            assert page.stdout.read() == "server closed\n"  # the server still got to close
    finally:
        page.kill()
        page.wait()


def test_each_stop_stops_only_its_own_kind_of_run(tmp_path):
    runner = Runner(cwd=str(tmp_path), launcher=sleeper())
    runner.start("export", "export", {}, str(tmp_path / "export"), "export_args.yaml")
    run_pids(runner)
    assert runner.stop("train") is False and runner.stop("eval") is False and runner.running
    assert runner.stop("export") is True
    assert wait_until_done(runner, timeout=20).state == "stopped"


# A stand-in run that writes what `lmf train` would: a log line, a trainer_log.jsonl entry, an error.
WRITER = [sys.executable, "-c", textwrap.dedent("""\
    import json, os, sys
    out = os.path.dirname(sys.argv[2])
    with open(os.path.join(out, "trainer_log.jsonl"), "a") as f:
        f.write(json.dumps({"current_steps": 3, "total_steps": 4, "loss": 0.5}) + "\\n")
    print("new run")
    sys.exit("RuntimeError: the new run failed")
""")]

EARLIER = {"trainer_log.jsonl": json.dumps({"current_steps": 9, "total_steps": 9, "loss": 9.0}) + "\n",
           "train_results.json": "{}", "all_results.json": "{}", "trainer_state.json": "{}",
           "adapter_model.safetensors": "", "training_args.yaml": "old: 1\n",
           "running_log.txt": "$ lmf train old\nValueError: the earlier run failed\n"}


def earlier_run(out) -> None:
    out.mkdir(parents=True)
    for name, text in EARLIER.items():
        (out / name).write_text(text)
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "adapter_model.safetensors").write_text("")


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
    out = tmp_path / "run"
    earlier_run(out)
    runner = Runner(cwd=str(tmp_path), launcher=WRITER)
    runner.start("train", "train", {**CFG, "output_dir": str(out)}, str(out), "training_args.yaml", overwrite=True)
    assert runner.trainer_log.read()[0].losses == []  # not the earlier run's curve
    status = wait_until_done(runner, timeout=30)
    previous = runner.previous
    assert os.path.dirname(previous) == str(out) and os.path.basename(previous).startswith("previous_")
    assert sorted(os.listdir(previous)) == sorted([*EARLIER, "checkpoint-9"])  # nothing deleted
    assert (out / "running_log.txt").read_text().startswith(f"$ lmf train {out}/training_args.yaml\nnew run")
    assert "earlier run" not in status.log and status.error == "RuntimeError: the new run failed"
    assert status.previous == previous
    assert sorted(os.listdir(out)) == sorted([os.path.basename(previous), "training_args.yaml", "running_log.txt",
                                              "trainer_log.jsonl"])
    assert read_progress(str(out)).losses == [(3, 0.5)]
    assert refused(out, resume=True) == "err_no_checkpoint"  # a resume cannot pick up the earlier run's checkpoint
    runner.start("train", "train", {**CFG, "output_dir": str(out)}, str(out), "training_args.yaml", overwrite=True)
    wait_until_done(runner, timeout=30)
    assert runner.previous != previous and os.path.isdir(previous)  # earlier previous_* folders stay put
    assert sorted(os.listdir(runner.previous)) == ["running_log.txt", "trainer_log.jsonl", "training_args.yaml"]


def test_resume_reads_only_what_the_resumed_run_adds(tmp_path):
    out = tmp_path / "run"
    earlier_run(out)
    runner = Runner(cwd=str(tmp_path), launcher=WRITER)
    runner.start("train", "train", {**CFG, "output_dir": str(out)}, str(out), "training_args.yaml", resume=True)
    assert runner.trainer_log.read()[0].losses == []  # the earlier lines are not this run's progress
    status = wait_until_done(runner, timeout=30)
    assert status.error == "RuntimeError: the new run failed" and "earlier run" not in status.log
    assert status.log.startswith("$ lmf train ") and runner.previous == ""
    text = (out / "running_log.txt").read_text()
    assert text.startswith(EARLIER["running_log.txt"]) and "new run" in text  # appended, kept
    assert runner.progress()[0].losses == [(3, 0.5)]
    assert (out / "checkpoint-9").is_dir()


def test_a_new_run_starts_a_new_log(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "running_log.txt").write_text("ValueError: a failed start\n")  # the page's own file: may be reused
    check_output_dir(str(out), False, False)
    runner = Runner(cwd=str(tmp_path), launcher=WRITER)
    runner.start("train", "train", {**CFG, "output_dir": str(out)}, str(out), "training_args.yaml")
    wait_until_done(runner, timeout=30)
    assert "failed start" not in (out / "running_log.txt").read_text()
