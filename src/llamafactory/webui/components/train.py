"""Train tab: stage, data, hyperparameters, method accordions; preview, save/load, start/stop; live progress."""

import os
from typing import Any

from ...extras.constants import TRAINING_ARGS_FILE
from ...hparams.finetuning_args import STAGES
from .. import files
from ..args import (
    UIError,
    command_preview,
    config_to_state,
    load_config_text,
    next_run_dir,
    page_defaults,
    run_dir,
    to_yaml,
    train_config,
)
from ..locales import message
from ..runner import check_output_dir
from .context import Context, alert, create_run_view

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit", "lion_8bit")
PREF_LOSSES = ("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo")


def text_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def create_train(ctx: Context) -> None:
    gr, m = ctx.gr, ctx.manager
    d = page_defaults()

    def text(name: str, **kw: Any) -> Any:
        return m.make("train", name, gr.Textbox, value=text_value(d[name]), **kw)

    def num(name: str, integer: bool = True, **kw: Any) -> Any:
        return m.make("train", name, gr.Number, value=d[name], precision=0 if integer else None, **kw)

    def check(name: str, **kw: Any) -> Any:
        return m.make("train", name, gr.Checkbox, value=bool(d[name]), **kw)

    def drop(name: str, choices: Any, **kw: Any) -> Any:
        return m.make("train", name, gr.Dropdown, choices=list(choices), value=d[name], **kw)

    with gr.Row():
        drop("stage", STAGES, scale=1)
        m.make("train", "dataset_dir", gr.Textbox, value=d["dataset_dir"], scale=1)
        m.make("train", "dataset", gr.Dropdown, choices=files.list_datasets(d["dataset_dir"], d["stage"]), value=[],
               multiselect=True, allow_custom_value=True, scale=4)
        m.make("train", "preview_data", gr.Button, state=False, scale=1)
    m.make("train", "preview_info", gr.Markdown, state=False, value="")
    m.make("train", "preview_rows", gr.JSON, state=False, visible=False)
    with gr.Row():
        text("learning_rate")
        text("num_train_epochs")
        text("max_grad_norm")
        text("max_samples")
        m.make("train", "precision", gr.Dropdown, choices=ctx.precisions, value=ctx.precision)
    with gr.Row():
        num("cutoff_len")
        num("per_device_train_batch_size")
        num("gradient_accumulation_steps")
        num("val_size", integer=False)
        drop("lr_scheduler_type", SCHEDULERS)
    with m.make("train", "extra_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            num("logging_steps")
            num("save_steps")
            num("warmup_steps")
            num("max_steps")
            drop("optim", OPTIMIZERS, allow_custom_value=True)
        with gr.Row():
            text("neftune_noise_alpha")
            num("weight_decay", integer=False)
            num("seed")
            text("save_total_limit")
            drop("report_to", ("none", "tensorboard", "wandb", "mlflow", "all"))
        with gr.Row():
            for name in ("packing", "neat_packing", "train_on_prompt", "mask_history", "resize_vocab",
                         "disable_gradient_checkpointing", "compute_accuracy", "plot_loss"):
                check(name)
        text("extra_args", lines=2)
    with m.make("train", "freeze_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            m.make("train", "freeze_trainable_layers", gr.Slider, minimum=-128, maximum=128, step=1,
                   value=d["freeze_trainable_layers"])
            text("freeze_trainable_modules")
            text("freeze_extra_modules")
            check("use_llama_pro")
    with m.make("train", "lora_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            m.make("train", "lora_rank", gr.Slider, minimum=1, maximum=1024, step=1, value=d["lora_rank"])
            num("lora_alpha")
            num("lora_dropout", integer=False)
            text("loraplus_lr_ratio")
            check("create_new_adapter")
        with gr.Row():
            check("use_rslora")
            check("use_dora")
            check("pissa_init")
            check("pissa_convert")
            text("lora_target")
            text("additional_target")
        with gr.Row():
            num("oft_block_size")
            num("oft_rank")
            text("oft_target")
    with m.make("train", "rlhf_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            num("pref_beta", integer=False)
            num("pref_ftx", integer=False)
            drop("pref_loss", PREF_LOSSES)
            text("reward_model", scale=2)
            check("ppo_score_norm")
            check("ppo_whiten_rewards")
        with gr.Row():
            m.make("train", "reward_funcs", gr.Textbox, value="")
            num("num_generations")
    with m.make("train", "galore_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            check("use_galore")
            num("galore_rank")
            num("galore_update_interval")
            num("galore_scale", integer=False)
            text("galore_target")
    with m.make("train", "apollo_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            check("use_apollo")
            num("apollo_rank")
            num("apollo_update_interval")
            num("apollo_scale", integer=False)
            text("apollo_target")
    with m.make("train", "badam_tab", gr.Accordion, state=False, open=False):
        with gr.Row():
            check("use_badam")
            drop("badam_mode", ("layer",))
            drop("badam_switch_mode", ("ascending", "descending", "random", "fixed"))
            num("badam_switch_interval")
    with m.make("train", "mm_tab", gr.Accordion, state=False, open=False):
        m.make("train", "mm_note", gr.Markdown, state=False)
        with gr.Row():
            check("freeze_vision_tower")
            check("freeze_multi_modal_projector")
            check("freeze_language_model")
        with gr.Row():
            for name in ("image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels"):
                num(name)
    with gr.Row():
        for name in ("preview_cmd", "save_args", "load_args"):
            m.make("train", name, gr.Button, state=False)
        m.make("train", "start", gr.Button, state=False, variant="primary")
        m.make("train", "stop", gr.Button, state=False, variant="stop")
    with gr.Row():
        m.make("train", "output_dir", gr.Textbox, value=run_dir(d["model_name"], d["model_name_or_path"],
                                                                  d["finetuning_type"], "train"), scale=3)
        m.make("train", "config_path", gr.Textbox, value="", scale=3)
        m.make("train", "overwrite", gr.Checkbox, value=False, scale=1)
        m.make("train", "resume", gr.Checkbox, value=False, scale=1)
    m.make("train", "command", gr.Code, state=False, language="shell", visible=False)
    create_run_view(ctx, "train", plot=True)


def _rows_markdown(total: int, rows: list[Any], note: str, lang: str) -> str:
    if not rows:
        return f"⚠️ {note}" if note else ""
    return message("info_rows", lang, total=total, path=note, shown=len(rows))


def wire_train(ctx: Context) -> None:
    gr, m, runner = ctx.gr, ctx.manager, ctx.runner
    lang = m["top.lang"]
    inputs = m.inputs("top", "train")

    def state(values: tuple[Any, ...]) -> dict[str, Any]:
        return m.state(("top", "train"), values)

    def on_data_source(dataset_dir: str, stage: str, chosen: list[str]) -> Any:
        names = files.list_datasets(dataset_dir, stage)
        return gr.update(choices=names, value=[c for c in chosen or [] if c in names])

    def on_preview(lang_value: str, dataset_dir: str, chosen: list[str]) -> tuple[Any, Any]:
        if not chosen:
            return alert(UIError("err_no_dataset"), lang_value), gr.update(visible=False)
        total, rows, note = files.preview_dataset(dataset_dir, chosen[0])
        return _rows_markdown(total, rows, note, lang_value), gr.update(value=rows, visible=bool(rows))

    def on_preview_cmd(lang_value: str, *values: Any) -> tuple[Any, Any]:
        try:
            cfg = train_config(state(values), start=True)  # what Start would run
        except UIError as err:
            return alert(err, lang_value), gr.update(visible=False)
        path = os.path.join(cfg["output_dir"], TRAINING_ARGS_FILE)
        return f"`lmf train {path}`", gr.update(value=command_preview("train", cfg), visible=True)

    def args_path(s: dict[str, Any]) -> str:
        path = (s.get("config_path") or "").strip()
        if path and not path.endswith((".yaml", ".yml", ".json")):
            path = os.path.join(path, TRAINING_ARGS_FILE)  # a run folder
        return path or os.path.join((s.get("output_dir") or "").strip(), TRAINING_ARGS_FILE)

    def on_save(lang_value: str, *values: Any) -> str:
        s = state(values)
        try:
            cfg = train_config(s)
        except UIError as err:
            return alert(err, lang_value)
        path = args_path(s)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg))
        return message("info_saved", lang_value, path=path)

    load_targets = [m[f"top.{n}"] for n in m.state_names["top"]] + [m[f"train.{n}"] for n in m.state_names["train"]]
    load_names = [("top", n) for n in m.state_names["top"]] + [("train", n) for n in m.state_names["train"]]

    def on_load(lang_value: str, *values: Any) -> list[Any]:
        s = state(values)
        path = args_path(s)
        skip = [gr.skip()] * len(load_targets)
        try:
            if not os.path.isfile(path):
                raise UIError("err_no_file", path=path)
            with open(path, encoding="utf-8") as f:
                cfg = load_config_text(f.read())
            page_keys = {n for _, n in load_names if n not in ("lang", "output_dir", "config_path")}
            loaded, extra = config_to_state(cfg, page_keys | {"output_dir"})
        except UIError as err:
            return [alert(err, lang_value), *skip]
        updates = []
        for tab, name in load_names:
            if name not in loaded or name == "lang":
                updates.append(gr.skip())
            elif name == "dataset":
                names = files.list_datasets(loaded.get("dataset_dir", s["dataset_dir"]),
                                            loaded.get("stage", s["stage"]))
                updates.append(gr.update(choices=sorted(set(names) | set(loaded[name])), value=loaded[name]))
            elif name == "checkpoint_path":
                updates.append(gr.update(choices=[(p, p) for p in loaded[name]], value=loaded[name]))
            elif tab == "train" and name in TEXT_KEYS:
                updates.append(text_value(loaded[name]))
            else:
                updates.append(loaded[name])
        note = (message("info_loaded_extra", lang_value, path=path, keys=", ".join(extra)) if extra
                else message("info_loaded", lang_value, path=path))
        return [note, *updates]

    def on_start(lang_value: str, *values: Any) -> list[Any]:
        s = state(values)
        overwrite, resume = bool(s.get("overwrite")), bool(s.get("resume"))
        try:
            cfg = train_config(s, start=True)
            check_output_dir(cfg["output_dir"], overwrite, resume)
            path = runner.start("train", "train", cfg, cfg["output_dir"], TRAINING_ARGS_FILE, overwrite=overwrite,
                                resume=resume)
        except UIError as err:
            return [gr.skip(), alert(err, lang_value), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip()]
        bar = ctx.progress_bar("train", "running", 0.0, message("progress_starting", lang_value))
        # The next Start gets a new folder; overwrite and resume were about this one.
        folder = next_run_dir(s["model_name"], s["model_name_or_path"], s["finetuning_type"], "train",
                              used=cfg["output_dir"])
        return [bar, ctx.started(path, lang_value), "", None, gr.Timer(active=True), folder, False, False]

    m["train.dataset_dir"].change(on_data_source, [m["train.dataset_dir"], m["train.stage"], m["train.dataset"]],
                                  [m["train.dataset"]])
    m["train.stage"].change(on_data_source, [m["train.dataset_dir"], m["train.stage"], m["train.dataset"]],
                            [m["train.dataset"]])
    m["train.preview_data"].click(on_preview, [lang, m["train.dataset_dir"], m["train.dataset"]],
                                  [m["train.preview_info"], m["train.preview_rows"]])
    m["train.preview_cmd"].click(on_preview_cmd, [lang, *inputs], [m["train.status"], m["train.command"]])
    m["train.save_args"].click(on_save, [lang, *inputs], [m["train.status"]])
    m["train.load_args"].click(on_load, [lang, *inputs], [m["train.status"], *load_targets])
    m["train.start"].click(on_start, [lang, *inputs], [m["train.progress"], m["train.status"], m["train.log"],
                                                        m["train.loss_plot"], ctx.timer, m["train.output_dir"],
                                                        m["train.overwrite"], m["train.resume"]])
    m["train.stop"].click(ctx.stopper("train"), [lang], [m["train.status"]])


# Train-tab keys shown in text boxes (so numbers loaded from a file are shown as text).
TEXT_KEYS = {"learning_rate", "num_train_epochs", "max_grad_norm", "max_samples", "neftune_noise_alpha",
             "save_total_limit", "freeze_trainable_modules", "freeze_extra_modules", "loraplus_lr_ratio", "lora_target",
             "additional_target", "oft_target", "reward_model", "galore_target", "apollo_target", "extra_args",
             "reward_funcs"}

