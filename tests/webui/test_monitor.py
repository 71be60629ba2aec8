"""The log reader behind the progress bar and the live loss plot, on a hand-written trainer_log.jsonl."""

import json
import os

from llamafactory.webui.monitor import (
    TrainerLog,
    clean_log,
    loss_figure,
    progress_html,
    read_progress,
    tail,
    tqdm_percent,
)

ENTRIES = [
    {"current_steps": 1, "total_steps": 4, "loss": 2.5, "lr": 1e-3, "epoch": 0.25, "percentage": 25.0,
     "elapsed_time": "0:00:01", "remaining_time": "0:00:03"},
    {"current_steps": 2, "total_steps": 4, "loss": 2.0, "lr": 1e-3, "epoch": 0.5, "percentage": 50.0,
     "elapsed_time": "0:00:02", "remaining_time": "0:00:02"},
    {"current_steps": 2, "total_steps": 4, "eval_loss": 2.2, "epoch": 0.5, "percentage": 50.0,
     "elapsed_time": "0:00:02", "remaining_time": "0:00:02"},
    {"current_steps": 4, "total_steps": 4, "loss": 1.5, "lr": 0.0, "epoch": 1.0, "percentage": 100.0,
     "elapsed_time": "0:00:04", "remaining_time": "0:00:00"},
]


def write(path, entries, mode="a", end="\n"):
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries[:-1]) + json.dumps(entries[-1]) + end)


def test_progress_eta_and_loss_points(tmp_path):
    write(tmp_path / "trainer_log.jsonl", ENTRIES)
    p = read_progress(str(tmp_path))
    assert (p.current, p.total, p.percent, p.elapsed, p.remaining) == (4, 4, 100.0, "0:00:04", "0:00:00")
    assert p.losses == [(1, 2.5), (2, 2.0), (4, 1.5)] and p.eval_losses == [(2, 2.2)] and p.last_loss == 1.5


def test_reads_incrementally_and_waits_for_unfinished_lines(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    log = TrainerLog(str(tmp_path))
    assert log.read() == (log.progress, False)  # no file yet
    write(path, ENTRIES[:1], end="")  # the trainer is mid-write: no newline yet
    progress, changed = log.read()
    assert not changed and progress.losses == []
    with open(path, "a") as f:
        f.write("\n")
    progress, changed = log.read()
    assert changed and progress.losses == [(1, 2.5)] and progress.percent == 25.0
    assert log.read()[1] is False  # nothing new
    write(path, ENTRIES[1:2])
    progress, changed = log.read()
    assert changed and progress.losses == [(1, 2.5), (2, 2.0)] and progress.remaining == "0:00:02"


def test_a_recreated_log_starts_over(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    log = TrainerLog(str(tmp_path))
    write(path, ENTRIES)
    assert len(log.read()[0].losses) == 3
    os.remove(path)  # a fresh run (overwrite) deletes and rewrites it
    write(path, ENTRIES[:1], mode="w")
    progress, changed = log.read()
    assert changed and progress.losses == [(1, 2.5)] and progress.current == 1


def test_plot_has_the_points(tmp_path):
    write(tmp_path / "trainer_log.jsonl", ENTRIES)
    fig = loss_figure(read_progress(str(tmp_path)))
    lines = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines()}
    assert lines["loss"] == [1, 2, 4] and lines["eval_loss"] == [2] and "smoothed" in lines
    assert loss_figure(read_progress(str(tmp_path / "none"))) is None


def test_terminal_output_as_a_page_shows_it(tmp_path):
    text = "start\nTrain:  10%|#  | 1/10\rTrain:  50%|#####  | 5/10\r\x1b[32mTrain: 100%|##########| 10/10\x1b[0m\ndone"
    assert clean_log(text) == "start\nTrain: 100%|##########| 10/10\ndone"
    assert tqdm_percent(text) == 100.0 and tqdm_percent("no bars") is None
    log = tmp_path / "running_log.txt"
    log.write_text("x" * 50 + "\n" + "\n".join(f"line {i}" for i in range(300)))
    assert tail(str(log), max_lines=2) == "line 298\nline 299"
    assert tail(str(log), max_bytes=20) == "line 298\nline 299"  # the cut "97" before them is dropped
    assert tail(str(tmp_path / "missing")) == ""
    bar = progress_html("train-progress", "running", 42.0, "<42%>")
    assert 'id="train-progress-bar" data-state="running" data-percent="42.0"' in bar and "&lt;42%&gt;" in bar


def test_a_runs_reader_skips_what_the_log_held_when_it_started(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    write(path, ENTRIES[:2])  # the earlier run's lines (a resumed run appends after them)
    log = TrainerLog(str(tmp_path), skip_existing=True)
    progress, changed = log.read()
    assert not changed and progress.losses == [] and progress.total == 0  # not shown as this run's progress
    write(path, ENTRIES[3:])
    progress, changed = log.read()
    assert changed and progress.losses == [(4, 1.5)] and progress.current == 4
    os.remove(path)  # a fresh run deletes the earlier log and starts its own: read from its start
    write(path, ENTRIES[:1], mode="w")
    assert log.read()[0].losses == [(1, 2.5)]
    assert TrainerLog(str(tmp_path / "none"), skip_existing=True).read()[1] is False


def test_the_log_tail_starts_where_this_run_began(tmp_path):
    log = tmp_path / "running_log.txt"
    log.write_text("$ lmf train a.yaml\nValueError: the earlier run failed\n")
    start = log.stat().st_size
    with open(log, "a") as f:
        f.write("$ lmf train a.yaml\nresumed 10%|#\n")
    assert tail(str(log), start=start) == "$ lmf train a.yaml\nresumed 10%|#"
    assert tail(str(log), start=start, max_bytes=20) == "resumed 10%|#"  # cut inside this run: cut line dropped
    assert "earlier" in tail(str(log))
    assert tail(str(log), start=10_000) == tail(str(log))  # truncated since: all of it is new
