"""Build the page (`create_ui`) and serve it (`run_webui`, the `lmf webui` command).

A timer ticks once a second while a run is going and refreshes the tab that started it: progress bar, status,
log tail, and for training the loss plot (redrawn only when trainer_log.jsonl grew).
"""

import json
import os
from typing import Any

from ..extras.errors import UserError
from .args import precision_choices, probe_device
from .components import (
    Context,
    create_chat,
    create_eval,
    create_export,
    create_top,
    create_train,
    wire_chat,
    wire_eval,
    wire_export,
    wire_top,
    wire_train,
)
from .components.top import refresh_checkpoints
from .locales import label, message
from .manager import Manager
from .monitor import PROGRESS_CSS, Progress, loss_figure
from .runner import Runner, RunStatus, install_signal_handlers

TABS = ("train", "eval", "chat", "export")
RUN_TABS = ("train", "eval", "export")


def import_gradio() -> Any:
    try:
        import gradio
    except ImportError as err:
        raise UserError("`lmf webui` needs gradio: `pip install \"llamafactory[webui]\"` (gradio pins pillow<13, "
                        "so it is an optional extra)") from err
    return gradio


def _checkpoints(run_dir: str) -> str:
    try:
        names = [n for n in os.listdir(run_dir) if n.startswith("checkpoint-") and n[11:].isdigit()]
    except OSError:
        names = []
    return ", ".join(sorted(names, key=lambda n: int(n[11:]))) or "-"


def _results(run_dir: str) -> Any:
    path = os.path.join(run_dir, "all_results.json")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    predictions = os.path.join(run_dir, "generated_predictions.jsonl")
    if os.path.isfile(predictions):
        results["predictions_file"] = predictions
    return results


def describe(st: RunStatus, progress: Progress | None, lang: str) -> tuple[str, float, str, str]:
    """(bar state, percent, bar text, status line) of a run."""
    bar, percent, text, status = _describe(st, progress, lang)
    if st.previous:
        status += "\n\n" + message("info_set_aside", lang, path=st.previous)
    return bar, percent, text, status


def _describe(st: RunStatus, progress: Progress | None, lang: str) -> tuple[str, float, str, str]:
    has_steps = progress is not None and progress.total > 0
    percent = progress.percent if has_steps else (st.percent or 0.0)
    if st.state == "running":
        text = (message("progress_step", lang, percent=percent, current=progress.current, total=progress.total,
                        elapsed=progress.elapsed, remaining=progress.remaining) if has_steps
                else message("progress_running", lang))
        status = message("info_running", lang, command="export" if st.kind == "export" else "train",
                         path=st.config_path)
        return "running", percent, text, status
    if st.state == "finished":
        status = message("info_finished", lang, path=st.run_dir)
        if progress is not None:
            status += " " + message("info_points", lang, count=len(progress.losses))
        return "finished", 100.0, message("progress_done", lang), status
    if st.state == "stopped":
        status = (message("info_stopped", lang, path=st.run_dir, checkpoints=_checkpoints(st.run_dir))
                  if st.kind == "train" else message("info_stopped_run", lang))
        return "stopped", percent, message("progress_stopped", lang), status
    status = "❌ " + message("info_failed", lang, code=st.returncode, error=st.error or "-")
    return "failed", percent, message("progress_failed", lang), status


def create_ui(runner: Runner | None = None, device: dict[str, bool] | None = None) -> Any:
    gr = import_gradio()
    precisions, precision = precision_choices(device if device is not None else probe_device())
    ctx = Context(gr=gr, manager=Manager(gr), runner=runner or Runner(), precisions=precisions,
                  precision=precision)
    m = ctx.manager
    with gr.Blocks(title="llamafactory web UI", analytics_enabled=False) as demo:
        m.make("top", "title", gr.Markdown, state=False)
        create_top(ctx)
        with gr.Tabs(elem_id="tabs"):
            for tab, create in zip(TABS, (create_train, create_eval, create_chat, create_export)):
                with m.add("top", f"tab_{tab}", gr.Tab(label=label("top", f"tab_{tab}", "en")["label"], id=tab,
                                                       elem_id=f"tab-{tab}"), state=False):
                    create(ctx)
        ctx.timer = gr.Timer(1.0, active=False)
        for wire in (wire_top, wire_train, wire_eval, wire_chat, wire_export):
            wire(ctx)

        outputs = {tab: [m[f"{tab}.progress"], m[f"{tab}.status"], m[f"{tab}.log"]] for tab in RUN_TABS}
        outputs["train"].append(m["train.loss_plot"])
        outputs["eval"].append(m["eval.results"])
        flat = [c for tab in RUN_TABS for c in outputs[tab]]

        picker = [m["top.model_name"], m["top.model_name_or_path"], m["top.finetuning_type"], m["top.checkpoint_path"]]

        def tick(lang: str, *top: Any) -> list[Any]:
            st = ctx.runner.status()
            progress, changed = ctx.runner.progress()
            updates: dict[str, list[Any]] = {tab: [gr.skip()] * len(outputs[tab]) for tab in RUN_TABS}
            if st.state != "idle" and st.kind in updates:
                bar, percent, text, status = describe(st, progress, lang)
                view = [ctx.progress_bar(st.kind, bar, percent, text), status, st.log]
                if st.kind == "train":
                    view.append(loss_figure(progress) if changed else gr.skip())
                elif st.kind == "eval":
                    view.append(_results(st.run_dir) if st.state == "finished" else gr.skip())
                updates[st.kind] = view
            active = st.state == "running"
            # The last tick of a run: its checkpoints join the picker.
            picked = gr.skip() if active or st.kind == "export" else refresh_checkpoints(gr, *top)
            return [*[u for tab in RUN_TABS for u in updates[tab]], picked, gr.Timer(active=active)]

        lang = m["top.lang"]
        ctx.timer.tick(tick, [lang, *picker], [*flat, m["top.checkpoint_path"], ctx.timer], show_progress="hidden")
        demo.load(lambda: gr.Timer(active=ctx.runner.running), None, [ctx.timer])
        localized = [component for _, _, component in m.localized()]
        lang.change(m.relabel, [lang], localized)
    demo.llamafactory_context = ctx  # for tests
    return demo


def launch_settings() -> dict[str, Any]:
    """GRADIO_SERVER_NAME / GRADIO_SERVER_PORT / GRADIO_SHARE as for `lmf webchat`, except that the page listens on
    127.0.0.1 unless GRADIO_SERVER_NAME says otherwise: it starts processes and reads files on this machine."""
    from ..chat.webchat import launch_settings as webchat_settings

    settings = webchat_settings()
    if not os.getenv("GRADIO_SERVER_NAME"):
        settings["server_name"] = "127.0.0.1"
    return settings


def run_webui(argv: list[str]) -> None:
    if argv:
        raise UserError(f"`lmf webui` takes no arguments (got `{' '.join(argv)}`); set GRADIO_SERVER_NAME, "
                        "GRADIO_SERVER_PORT or GRADIO_SHARE to change where it listens")
    import_gradio()
    settings = launch_settings()
    runner = Runner()
    demo = create_ui(runner)
    # Runs live in their own process groups, so Ctrl-C here does not reach them: SIGINT and SIGTERM end the run
    # (as Stop does, escalating within seconds) and then close gradio; atexit and the `finally` cover other exits.
    install_signal_handlers()
    print(f"llamafactory web UI on http://{settings['server_name']}:{settings['server_port']}", flush=True)
    try:
        demo.queue().launch(css=PROGRESS_CSS, ssr_mode=False, **settings)  # css= on launch(): gradio 6
    finally:
        runner.shutdown()
