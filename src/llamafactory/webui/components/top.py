"""Top bar: language, model, finetuning method, checkpoint picker, and the model-loading options."""

from typing import Any

from ...hparams.finetuning_args import FINETUNING_TYPES
from .. import files, models
from ..args import BOOSTERS, NONE, is_path, page_defaults, run_dir
from .context import Context

QUANT_BITS = (NONE, "8", "4")
ROPE = (NONE, "linear", "dynamic", "yarn", "llama3")


def create_top(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    d = page_defaults()
    with gr.Row():
        m.make("top", "lang", gr.Dropdown, choices=[("English", "en"), ("中文", "zh")], value="en", scale=1)
        m.make("top", "model_name", gr.Dropdown, choices=models.model_choices(), value=d["model_name"], scale=2)
        m.make("top", "model_name_or_path", gr.Textbox, value=d["model_name_or_path"], scale=3)
    with gr.Row():
        m.make("top", "finetuning_type", gr.Dropdown, choices=list(FINETUNING_TYPES), value=d["finetuning_type"],
               scale=1)
        m.make("top", "checkpoint_path", gr.Dropdown, choices=[], value=[], multiselect=True, allow_custom_value=True,
               scale=5)
        m.make("top", "refresh", gr.Button, state=False, scale=1)
    with m.make("top", "advanced", gr.Accordion, state=False, open=False):
        with gr.Row():
            m.make("top", "quantization_bit", gr.Dropdown, choices=list(QUANT_BITS), value=NONE)
            m.make("top", "quantization_method", gr.Dropdown, choices=["bnb", "hqq", "eetq"],
                   value=d["quantization_method"])
            m.make("top", "template", gr.Dropdown, choices=list(models.TEMPLATES), value=d["template"])
            m.make("top", "rope_scaling", gr.Dropdown, choices=list(ROPE), value=NONE)
            m.make("top", "booster", gr.Radio, choices=list(BOOSTERS), value=d["booster"], scale=2)


def checkpoint_choices(name: str, path: str, ftype: str) -> list[str]:
    """Run names under saves/<model>/<ftype>/ (args.resolve_checkpoint turns them back into paths)."""
    return [label for label, _ in files.list_checkpoints(name, path, ftype)]


def refresh_checkpoints(gr: Any, model_name: str, model_path: str, finetuning_type: str, chosen: list[str]) -> Any:
    """The picker's choices read again from saves/, keeping the chosen entries that still exist."""
    choices = checkpoint_choices(model_name, model_path, finetuning_type)
    return gr.update(choices=choices, value=[c for c in chosen or [] if c in choices or is_path(c)])


def wire_top(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    name, path, ftype = m["top.model_name"], m["top.model_name_or_path"], m["top.finetuning_type"]
    ckpt = m["top.checkpoint_path"]
    dirs = [m["train.output_dir"], m["eval.output_dir"]]

    def on_name(model_name: str) -> tuple[Any, Any]:
        if model_name not in models.MODELS:
            return gr.skip(), gr.skip()  # Custom: keep whatever path was typed
        return models.hub_id(model_name), models.default_template(model_name)

    def on_path(model_name: str, model_path: str) -> Any:
        found = models.find_by_path(model_path)
        if found == model_name or (found is None and model_name == models.CUSTOM):
            return gr.skip()
        return found or models.CUSTOM

    def on_model(model_name: str, model_path: str, finetuning_type: str, chosen: list[str]) -> list[Any]:
        # Run names of another model or method no longer apply; typed or loaded paths stay.
        return [refresh_checkpoints(gr, model_name, model_path, finetuning_type, chosen),
                run_dir(model_name, model_path, finetuning_type, "train"),
                run_dir(model_name, model_path, finetuning_type, "eval")]

    name.change(on_name, [name], [path, m["top.template"]])
    path.change(on_path, [name, path], [name])
    for trigger in (name.change, path.change, ftype.change):
        trigger(on_model, [name, path, ftype, ckpt], [ckpt, *dirs])
    m["top.refresh"].click(lambda *a: refresh_checkpoints(gr, *a), [name, path, ftype, ckpt], [ckpt])
