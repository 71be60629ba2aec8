"""Export tab: `lmf export` merges the chosen adapters into the base and writes safetensors shards or GGUF."""

from typing import Any

from ..args import NONE, UIError, command_preview, export_config, page_defaults, run_dir
from ..locales import message
from .context import Context, alert, create_run_view

EXPORT_ARGS_FILE = "export_args.yaml"


def create_export(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    d = page_defaults()
    with gr.Row():
        m.make("export", "export_size", gr.Number, value=d["export_size"], minimum=0.1)
        m.make("export", "export_format", gr.Radio, choices=["safetensors", "gguf"], value=d["export_format"])
        m.make("export", "export_gguf_type", gr.Dropdown, choices=["f16", "bf16", "q8_0"], value=d["export_gguf_type"])
        m.make("export", "infer_dtype", gr.Dropdown, choices=["auto", "float16", "bfloat16", "float32"],
               value=d["infer_dtype"])
        m.make("export", "export_device", gr.Radio, choices=["cpu", "auto"], value=d["export_device"])
    with gr.Row():
        m.make("export", "export_quantization_bit", gr.Dropdown, choices=[NONE, "8", "4", "3", "2"], value=NONE)
        m.make("export", "export_quantization_dataset", gr.Textbox, value="")
        m.make("export", "export_legacy_format", gr.Checkbox, value=d["export_legacy_format"])
    with gr.Row():
        m.make("export", "export_dir", gr.Textbox, value="", placeholder="output/my-model", scale=3)
        m.make("export", "export_hub_model_id", gr.Textbox, value="", scale=2)
    with gr.Row():
        m.make("export", "preview_cmd", gr.Button, state=False)
        m.make("export", "export", gr.Button, state=False, variant="primary")
        m.make("export", "stop", gr.Button, state=False, variant="stop")
    m.make("export", "command", gr.Code, state=False, language="shell", visible=False)
    create_run_view(ctx, "export")


def wire_export(ctx: Context) -> None:
    gr, m, runner = ctx.gr, ctx.manager, ctx.runner
    lang = m["top.lang"]
    inputs = m.inputs("top", "export")

    def state(values: tuple[Any, ...]) -> dict[str, Any]:
        return m.state(("top", "export"), values)

    def on_preview_cmd(lang_value: str, *values: Any) -> tuple[Any, Any]:
        try:
            cfg = export_config(state(values))
        except UIError as err:
            return alert(err, lang_value), gr.update(visible=False)
        return "", gr.update(value=command_preview("export", cfg), visible=True)

    def on_export(lang_value: str, *values: Any) -> list[Any]:
        s = state(values)
        try:
            cfg = export_config(s)
            folder = run_dir(s["model_name"], s["model_name_or_path"], s["finetuning_type"], "export")
            path = runner.start("export", "export", cfg, folder, EXPORT_ARGS_FILE)
        except UIError as err:
            return [gr.skip(), alert(err, lang_value), gr.skip(), gr.skip()]
        bar = ctx.progress_bar("export", "running", 0.0, message("progress_starting", lang_value))
        return [bar, ctx.started(path, lang_value), "", gr.Timer(active=True)]

    m["export.preview_cmd"].click(on_preview_cmd, [lang, *inputs], [m["export.status"], m["export.command"]])
    m["export.export"].click(on_export, [lang, *inputs], [m["export.progress"], m["export.status"], m["export.log"],
                                                          ctx.timer])
    m["export.stop"].click(ctx.stopper("export"), [lang], [m["export.status"]])
