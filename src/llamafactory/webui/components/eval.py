"""Evaluate & Predict tab: `lmf train` with do_eval (losses, perplexity) or do_predict (generated answers)."""

from typing import Any

from .. import files
from ..args import UIError, command_preview, eval_config, next_run_dir, page_defaults, run_dir
from ..locales import message
from ..runner import check_output_dir
from .context import Context, alert, create_run_view

EVAL_ARGS_FILE = "eval_args.yaml"


def create_eval(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    d = page_defaults()
    with gr.Row():
        m.make("eval", "dataset_dir", gr.Textbox, value=d["dataset_dir"], scale=1)
        m.make("eval", "dataset", gr.Dropdown, choices=files.list_datasets(d["dataset_dir"], "sft"), value=[],
               multiselect=True, allow_custom_value=True, scale=4)
    with gr.Row():
        m.make("eval", "cutoff_len", gr.Number, value=d["cutoff_len"], precision=0)
        m.make("eval", "max_samples", gr.Textbox, value="")
        m.make("eval", "per_device_eval_batch_size", gr.Number, value=d["per_device_eval_batch_size"], precision=0)
        m.make("eval", "predict", gr.Checkbox, value=d["predict"])
    with gr.Row():
        m.make("eval", "max_new_tokens", gr.Slider, minimum=1, maximum=4096, step=1, value=d["max_new_tokens"])
        m.make("eval", "top_p", gr.Slider, minimum=0.01, maximum=1.0, step=0.01, value=d["top_p"])
        m.make("eval", "temperature", gr.Slider, minimum=0.0, maximum=1.5, step=0.01, value=d["temperature"])
    with gr.Row():
        m.make("eval", "output_dir", gr.Textbox, value=run_dir(d["model_name"], d["model_name_or_path"],
                                                                 d["finetuning_type"], "eval"), scale=4)
        m.make("eval", "preview_cmd", gr.Button, state=False, scale=1)
        m.make("eval", "start", gr.Button, state=False, variant="primary", scale=1)
        m.make("eval", "stop", gr.Button, state=False, variant="stop", scale=1)
    m.make("eval", "command", gr.Code, state=False, language="shell", visible=False)
    create_run_view(ctx, "eval", results=True)


def wire_eval(ctx: Context) -> None:
    gr, m, runner = ctx.gr, ctx.manager, ctx.runner
    lang = m["top.lang"]
    inputs = m.inputs("top", "eval")

    def state(values: tuple[Any, ...]) -> dict[str, Any]:
        return m.state(("top", "eval"), values)

    def on_dir(dataset_dir: str, chosen: list[str]) -> Any:
        names = files.list_datasets(dataset_dir, "sft")
        return gr.update(choices=names, value=[c for c in chosen or [] if c in names])

    def on_preview_cmd(lang_value: str, *values: Any) -> tuple[Any, Any]:
        try:
            cfg = eval_config(state(values))
        except UIError as err:
            return alert(err, lang_value), gr.update(visible=False)
        return "", gr.update(value=command_preview("train", cfg), visible=True)

    def on_start(lang_value: str, *values: Any) -> list[Any]:
        s = state(values)
        try:
            cfg = eval_config(s)
            check_output_dir(cfg["output_dir"], overwrite=False, resume=False)
            path = runner.start("eval", "train", cfg, cfg["output_dir"], EVAL_ARGS_FILE)
        except UIError as err:
            return [gr.skip(), alert(err, lang_value), gr.skip(), gr.skip(), gr.skip(), gr.skip()]
        bar = ctx.progress_bar("eval", "running", 0.0, message("progress_starting", lang_value))
        folder = next_run_dir(s["model_name"], s["model_name_or_path"], s["finetuning_type"], "eval",
                              used=cfg["output_dir"])  # the next Start gets a new folder
        return [bar, ctx.started(path, lang_value), "", None, gr.Timer(active=True), folder]

    m["eval.dataset_dir"].change(on_dir, [m["eval.dataset_dir"], m["eval.dataset"]], [m["eval.dataset"]])
    m["eval.preview_cmd"].click(on_preview_cmd, [lang, *inputs], [m["eval.status"], m["eval.command"]])
    m["eval.start"].click(on_start, [lang, *inputs], [m["eval.progress"], m["eval.status"], m["eval.log"],
                                                      m["eval.results"], ctx.timer, m["eval.output_dir"]])
    m["eval.stop"].click(ctx.stopper("eval"), [lang], [m["eval.status"]])
