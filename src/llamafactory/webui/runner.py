"""Run `lmf train` / `lmf export` for the page as ordinary subprocesses, one at a time.

Start writes the config YAML into the run's folder and starts `python -m llamafactory.cli <command> <yaml>` (the
same interpreter as the page) with everything it prints going to `running_log.txt` beside it (a new file for a new
run; a resumed run appends, and only what it printed is read back). With "overwrite", the earlier run's files are
first moved into a `previous_<timestamp>/` folder inside the output folder: nothing is deleted, and neither the page
nor a later resume can mistake them for the new run's. Stop sends SIGINT to the run's process group, as Ctrl-C
would: the trainer stops and the checkpoints it saved stay (a later Start with "resume" continues from the newest);
if the run has not ended after a grace period it gets SIGTERM, then SIGKILL. A run that exits non-zero is reported
with its error line and the end of its log.

A run lives in its own process group (so that Stop reaches torchrun's workers), which also means a Ctrl-C in the
terminal of `lmf webui` does not reach it: `shutdown_all` ends every run when the page's process exits (atexit, and
the SIGINT/SIGTERM handlers that `install_signal_handlers` sets for `lmf webui`).
"""

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from ..extras.constants import RUNNING_LOG
from .args import WEBUI_FILES, UIError, timestamp, to_yaml
from .monitor import Progress, TrainerLog, tail, tqdm_percent

PREVIOUS = "previous_"  # previous_<timestamp>/: an overwritten run's files, kept inside its output folder
SHUTDOWN_S = (5.0, 2.0, 1.0)  # when the page exits: wait after SIGINT, after SIGTERM, after SIGKILL (under 10 s)


def check_output_dir(output_dir: str, overwrite: bool, resume: bool) -> None:
    """Refuse a folder that already holds results unless the person chose to overwrite or resume it."""
    if overwrite and resume:
        raise UIError("err_overwrite_and_resume")
    if not os.path.exists(output_dir):
        if resume:
            raise UIError("err_no_checkpoint", path=output_dir)
        return
    if not os.path.isdir(output_dir):
        raise UIError("err_not_a_folder", path=output_dir)
    contents = [name for name in os.listdir(output_dir) if name not in WEBUI_FILES]
    if resume:
        if not any(name.startswith("checkpoint-") for name in contents):
            raise UIError("err_no_checkpoint", path=output_dir)
        return
    if contents and not overwrite:
        raise UIError("err_output_dir_not_empty", path=output_dir)


def set_aside(output_dir: str) -> str:
    """Overwrite: move everything the folder holds (the earlier run: trainer_log.jsonl, checkpoint-*, results,
    weights, its arguments and log) into a new `previous_<timestamp>/` inside it; return that folder ("" when there
    was nothing to move). Earlier `previous_*` folders stay where they are. Nothing is deleted."""
    if not os.path.isdir(output_dir):
        return ""
    names = [name for name in os.listdir(output_dir) if not name.startswith(PREVIOUS)]
    if not names:
        return ""
    base = os.path.join(output_dir, PREVIOUS + timestamp())
    target, n = base, 2
    while os.path.exists(target):
        target, n = f"{base}_{n}", n + 1
    os.makedirs(target)
    for name in names:
        os.rename(os.path.join(output_dir, name), os.path.join(target, name))
    return target


def error_line(log: str) -> str:
    """The line that says why a run failed: the CLI's `error: ...`, else the last exception line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error"):
            return line
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line
    return lines[-1] if lines else ""


@dataclass
class RunStatus:
    kind: str = ""  # train, eval or export
    state: str = "idle"  # idle, running, finished, failed, stopped
    returncode: int | None = None
    run_dir: str = ""
    config_path: str = ""
    log: str = ""
    error: str = ""
    percent: float | None = None  # evaluation / export: from the printed progress bars
    previous: str = ""  # where an overwrite moved the earlier run's files


_RUNNERS: "weakref.WeakSet[Runner]" = weakref.WeakSet()


class Runner:
    def __init__(self, cwd: str | None = None, grace_s: float = 30.0, launcher: list[str] | None = None) -> None:
        self.cwd = cwd
        self.grace_s = grace_s
        # What runs: `<launcher> <command> <yaml>`; tests put a stand-in process here.
        self.launcher = launcher or [sys.executable, "-m", "llamafactory.cli"]
        self.proc: subprocess.Popen | None = None
        self.kind = ""
        self.run_dir = ""
        self.config_path = ""
        self.log_path = ""
        self.log_offset = 0  # where this run's output starts in running_log.txt (a resumed run appends)
        self.previous = ""  # where Start with overwrite moved the earlier run's files
        self.stopping = False
        self.trainer_log: TrainerLog | None = None
        self._lock = threading.Lock()
        _RUNNERS.add(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, kind: str, command: str, cfg: dict, run_dir: str, file_name: str, overwrite: bool = False,
              resume: bool = False) -> str:
        """Write `file_name` (the YAML) into run_dir and start the command on it; return the YAML's path.

        overwrite: first move the folder's earlier files into previous_<timestamp>/ (see `set_aside`).
        resume: the run continues the folder's run, so its log is appended to rather than started anew.
        """
        with self._lock:
            if self.running:
                raise UIError("err_busy")
            self.previous = set_aside(run_dir) if overwrite else ""
            os.makedirs(run_dir, exist_ok=True)
            self.config_path = os.path.join(run_dir, file_name)
            with open(self.config_path, "w", encoding="utf-8") as f:
                f.write(to_yaml(cfg))
            self.log_path = os.path.join(run_dir, RUNNING_LOG)
            self.log_offset = os.path.getsize(self.log_path) if resume and os.path.isfile(self.log_path) else 0
            out = cfg.get("output_dir")
            out = out if not out or os.path.isabs(out) or self.cwd is None else os.path.join(self.cwd, out)
            # Whatever trainer_log.jsonl holds before the run starts belongs to an earlier run (a resumed one
            # appends to it): the progress shown starts after it.
            self.trainer_log = TrainerLog(out, skip_existing=True) if kind == "train" and out else None
            cmd = [*self.launcher, command, self.config_path]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with open(self.log_path, "a" if resume else "w", encoding="utf-8") as log:
                log.write(f"$ lmf {command} {self.config_path}\n")
                log.flush()
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.cwd, env=env, start_new_session=True)
            self.kind, self.run_dir, self.stopping = kind, run_dir, False
            return self.config_path

    def _signal(self, signum: int, proc: subprocess.Popen | None = None) -> None:
        proc = proc or self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signum)  # the whole group: torchrun's workers too
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, kind: str | None = None) -> bool:
        """Ask the run to end as Ctrl-C would; escalate in the background if it lingers. False if none runs (or,
        with `kind`, if the run is of another kind: each tab's Stop stops only its own runs)."""
        if not self.running or (kind is not None and kind != self.kind):
            return False
        self.stopping = True
        self._signal(signal.SIGINT)
        proc = self.proc

        def escalate() -> None:
            for signum in (signal.SIGTERM, signal.SIGKILL):
                try:
                    proc.wait(timeout=self.grace_s)
                    return
                except subprocess.TimeoutExpired:
                    if self.proc is proc:
                        self._signal(signum)

        threading.Thread(target=escalate, daemon=True).start()
        return True

    def shutdown(self, waits: tuple[float, float, float] = SHUTDOWN_S) -> None:
        """End the run now, waiting for it (the page is exiting): SIGINT, then SIGTERM, then SIGKILL to its group."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.stopping = True
        for signum, wait_s in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), waits):
            self._signal(signum, proc)
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            break
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group that outlived its leader
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def progress(self) -> tuple[Progress | None, bool]:
        """Training progress from trainer_log.jsonl, and whether it changed since the last call."""
        if self.trainer_log is None:
            return None, False
        return self.trainer_log.read()

    def status(self) -> RunStatus:
        if self.proc is None:
            return RunStatus()
        code = self.proc.poll()
        log = tail(self.log_path, start=self.log_offset)
        if code is None:
            state = "running"
        elif code == 0:
            state = "finished"
        elif self.stopping:
            state = "stopped"
        else:
            state = "failed"
        return RunStatus(kind=self.kind, state=state, returncode=code, run_dir=self.run_dir,
                         config_path=self.config_path, log=log, error=error_line(log) if state == "failed" else "",
                         percent=tqdm_percent(log), previous=self.previous)


def shutdown_all(waits: tuple[float, float, float] = SHUTDOWN_S) -> None:
    """End every run this process started (the page is exiting); registered with atexit."""
    for runner in list(_RUNNERS):
        runner.shutdown(waits)


atexit.register(shutdown_all)

_shutting_down = False


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM to `lmf webui`: end the runs first, then interrupt the main thread as Ctrl-C does, so that
    gradio closes its server and the process exits. A second signal while runs are ending kills them at once."""
    global _shutting_down
    if _shutting_down:
        shutdown_all((0.0, 0.0, 1.0))
        raise KeyboardInterrupt
    _shutting_down = True
    try:
        shutdown_all()
    finally:
        _shutting_down = False
    raise KeyboardInterrupt


def install_signal_handlers() -> bool:
    """For `lmf webui`: SIGINT and SIGTERM end the runs before the page closes. Only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    return True


def wait_until_done(runner: Runner, timeout: float) -> RunStatus:
    """Block until the run ends (tests and scripts)."""
    deadline = time.time() + timeout
    while runner.running and time.time() < deadline:
        time.sleep(0.2)
    return runner.status()
