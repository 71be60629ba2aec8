"""Follow a run from its files: trainer_log.jsonl (progress, ETA, losses) and running_log.txt (what it printed).

The trainer appends one JSON line per logging step (train/callbacks.py); `TrainerLog` reads only what was added
since the last read, so a page refresh every second costs a few bytes. A fresh run may delete and recreate the file;
that is noticed and read from the start. A run's reader skips what the file held when the run started
(`skip_existing`): a resumed run appends to the earlier run's log, whose lines are not this run's progress.
"""

import html
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..extras.constants import TRAINER_LOG


@dataclass
class Progress:
    current: int = 0
    total: int = 0
    percent: float = 0.0
    elapsed: str = ""
    remaining: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


class TrainerLog:
    def __init__(self, output_dir: str, skip_existing: bool = False) -> None:
        self.path = os.path.join(output_dir, TRAINER_LOG)
        self.offset = 0
        self.identity: tuple[int, int] | None = None
        self.partial = ""
        self.progress = Progress()
        if skip_existing:  # start after what is there now; a replaced or truncated file is read from its start
            try:
                stat = os.stat(self.path)
            except OSError:
                return
            self.identity, self.offset = (stat.st_dev, stat.st_ino), stat.st_size

    def _reset(self) -> None:
        self.offset, self.partial, self.progress = 0, "", Progress()

    def read(self) -> tuple[Progress, bool]:
        """The progress so far, and whether anything new arrived since the last call."""
        try:
            stat = os.stat(self.path)
        except OSError:  # not there (yet, or any more: a fresh run deletes the earlier log)
            shown = self.progress != Progress()
            self._reset()
            self.identity = None
            return self.progress, shown
        identity = (stat.st_dev, stat.st_ino)
        if identity != self.identity or stat.st_size < self.offset:  # replaced or truncated: a new log
            self._reset()
            self.identity = identity
        if stat.st_size == self.offset:
            return self.progress, False
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            chunk = f.read()
            self.offset = f.tell()
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for the next read
        changed = False
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._add(entry)
            changed = True
        return self.progress, changed

    def _add(self, entry: dict[str, Any]) -> None:
        p = self.progress
        step = int(entry.get("current_steps", p.current))
        p.current = step
        p.total = int(entry.get("total_steps", p.total) or 0)
        p.percent = float(entry.get("percentage", 100.0 * step / p.total if p.total else 0.0))
        p.elapsed = str(entry.get("elapsed_time", p.elapsed))
        p.remaining = str(entry.get("remaining_time", p.remaining))
        if isinstance(entry.get("loss"), (int, float)):
            p.losses.append((step, float(entry["loss"])))
        if isinstance(entry.get("eval_loss"), (int, float)):
            p.eval_losses.append((step, float(entry["eval_loss"])))


def read_progress(output_dir: str) -> Progress:
    """Everything in a run's trainer_log.jsonl, read at once."""
    return TrainerLog(output_dir).read()[0]


_TQDM = re.compile(r"(\d{1,3})%\|")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tqdm_percent(text: str) -> float | None:
    """The last progress-bar percentage printed (evaluation and prediction have no trainer log)."""
    found = _TQDM.findall(text)
    return float(found[-1]) if found else None


def clean_log(text: str) -> str:
    """Terminal output as a page shows it: progress bars redraw with \\r, keep only their last state."""
    text = _ANSI.sub("", text)
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


def tail(path: str, max_bytes: int = 32_000, max_lines: int = 200, start: int = 0) -> str:
    """The end of a log, from byte `start` on at most (where this run's output begins in an appended log)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = start if start <= size else 0  # truncated since: all of it is new
            begin = max(size - max_bytes, start)
            f.seek(begin)
            raw = f.read()
    except OSError:
        return ""
    lines = clean_log(raw.decode("utf-8", errors="replace")).splitlines()
    if begin > start and lines:
        lines = lines[1:]  # the first line was cut
    return "\n".join(lines[-max_lines:])


def progress_html(elem: str, state: str, percent: float, text: str) -> str:
    """A progress bar the page shows and a browser test can read: data-state and data-percent."""
    percent = max(0.0, min(100.0, percent))
    return (f'<div class="lmf-progress" id="{elem}-bar" data-state="{state}" data-percent="{percent:.1f}">'
            f'<div class="lmf-progress-fill lmf-{state}" style="width:{percent:.1f}%"></div>'
            f'<span class="lmf-progress-text">{html.escape(text)}</span></div>')


PROGRESS_CSS = """
.lmf-progress { position: relative; height: 26px; border-radius: 6px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.lmf-progress-fill { height: 100%; background: var(--color-accent); opacity: 0.55; transition: width 0.5s; }
.lmf-progress-fill.lmf-failed { background: #d9534f; }
.lmf-progress-fill.lmf-stopped { background: #f0ad4e; }
.lmf-progress-text { position: absolute; left: 10px; top: 3px; font-size: 14px; }
"""


def loss_figure(progress: Progress, title: str = "") -> Any:
    """A matplotlib figure of the loss (and eval loss) so far; None before the first point."""
    if not progress.losses and not progress.eval_losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..extras.ploting import smooth

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if progress.losses:
        steps, values = zip(*progress.losses)
        ax.plot(steps, values, color="#1f77b4", alpha=0.35, marker="o", markersize=3, label="loss")
        if len(values) > 1:
            ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
    if progress.eval_losses:
        steps, values = zip(*progress.eval_losses)
        ax.plot(steps, values, color="#ff7f0e", marker="s", markersize=4, label="eval_loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # gradio renders it; pyplot need not keep it
    return fig
