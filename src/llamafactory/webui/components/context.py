"""What every tab's code shares: gradio, the component manager, the run, the loaded chat model."""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..args import UIError
from ..locales import label, message
from ..manager import Manager
from ..monitor import progress_html
from ..runner import Runner


@dataclass
class ChatHolder:
    """The Chat tab's model (one per page server, like the run)."""

    model: Any = None
    description: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Context:
    gr: Any
    manager: Manager
    runner: Runner
    precisions: list[str]
    precision: str
    chat: ChatHolder = field(default_factory=ChatHolder)
    timer: Any = None  # ticks while a run is going, to refresh its progress, log and plot

    def progress_bar(self, tab: str, state: str, percent: float, text: str) -> str:
        return progress_html(f"{tab}-progress", state, percent, text)

    def stop_run(self, kind: str, lang: str) -> str:
        """A tab's Stop: it stops only a run that tab started (train, eval or export)."""
        runner = self.runner
        if runner.stop(kind):
            return message("info_stopping", lang)
        if runner.running:
            return message("info_other_running", lang, tab=label("top", f"tab_{runner.kind}", lang)["label"],
                           path=runner.config_path)
        return message("info_nothing_running", lang)

    def stopper(self, kind: str) -> Callable[[str], str]:
        def stop(lang: str) -> str:
            return self.stop_run(kind, lang)

        return stop

    def started(self, path: str, lang: str) -> str:
        """The status line of a run just started (and where an overwrite put the earlier run's files)."""
        command = "export" if self.runner.kind == "export" else "train"
        text = message("info_running", lang, command=command, path=path)
        if self.runner.previous:
            text += "\n\n" + message("info_set_aside", lang, path=self.runner.previous)
        return text


def create_run_view(ctx: Context, tab: str, plot: bool = False, results: bool = False) -> None:
    """Progress bar, status line, log and (for training) the live loss plot of a tab that starts runs."""
    gr, m = ctx.gr, ctx.manager
    m.make(tab, "progress", gr.HTML, state=False,
           value=progress_html(f"{tab}-progress", "idle", 0.0, message("progress_idle", "en")))
    m.make(tab, "status", gr.Markdown, state=False, value="")
    with gr.Row():
        m.make(tab, "log", gr.Textbox, state=False, lines=14, max_lines=14, interactive=False, autoscroll=True,
               scale=3 if plot or results else 1)
        if plot:
            m.make(tab, "loss_plot", gr.Plot, state=False, scale=2)
        if results:
            m.make(tab, "results", gr.JSON, state=False, scale=2)


def alert(err: UIError, lang: str) -> str:
    return f"⚠️ {err.text(lang)}"
