"""The page itself: every field maps to a config key, every label has both languages, runs are described."""

import importlib.util
import os
import sys

import pytest

from llamafactory.webui import args
from llamafactory.webui.locales import LABELS, MESSAGES, label
from llamafactory.webui.monitor import Progress
from llamafactory.webui.runner import RunStatus

HAS_GRADIO = importlib.util.find_spec("gradio") is not None
CPU = {"cuda": False, "bf16": False}


@pytest.fixture(scope="module")
def page():
    if not HAS_GRADIO:
        pytest.skip("gradio is the optional `webui` extra")
    from llamafactory.webui.interface import create_ui

    return create_ui(device=CPU)


def test_every_field_is_a_config_key_or_a_page_key(page):
    m = page.llamafactory_context.manager
    known = set(args.DEFAULTS) | set(args.PAGE_ONLY) | {"output_dir", "config_path", "export_dir"}
    for tab, names in m.state_names.items():
        for name in names:
            assert name in known, f"{tab}.{name} would be ignored"
    ids = [c.elem_id for c in m.components.values() if getattr(c, "elem_id", None)]
    assert len(ids) == len(set(ids))
    assert m["train.precision"].choices == [("fp32", "fp32")]  # a CPU without bf16: nothing else offered
    for name in ("top.model_name", "top.checkpoint_path", "train.start", "train.stop", "train.progress",
                 "train.loss_plot", "eval.start", "chat.load_model", "chat.chatbot", "export.export"):
        assert m[name].elem_id == name.replace(".", "-")


def test_field_defaults_are_the_page_defaults(page):
    m = page.llamafactory_context.manager
    d = args.page_defaults()
    for name in ("learning_rate", "num_train_epochs", "max_grad_norm"):
        assert float(m[f"train.{name}"].value) == d[name]
    for name in ("cutoff_len", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps",
                 "save_steps", "lora_rank", "pref_beta", "galore_rank", "freeze_trainable_layers"):
        assert m[f"train.{name}"].value == d[name], name
    assert m["train.logging_steps"].value == 5 and m["top.template"].value == "smollm2"
    assert m["top.model_name_or_path"].value == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert m["train.output_dir"].value.startswith("saves/SmolLM2-135M-Instruct/lora/train_")


def test_both_languages_everywhere(page):
    for key, entry in LABELS.items():
        assert set(entry) == {"en", "zh"} and set(entry["en"]) == set(entry["zh"]), key
    for key, entry in MESSAGES.items():
        assert set(entry) == {"en", "zh"}, key
    m = page.llamafactory_context.manager
    localized = m.localized()
    updates = m.relabel("zh")
    assert len(updates) == len(localized) > 150
    by_name = {f"{tab}.{name}": update for (tab, name, _), update in zip(localized, updates)}
    assert by_name["top.tab_train"]["label"] == "训练" and by_name["train.start"]["value"] == "开始"
    assert by_name["train.learning_rate"]["label"] == "学习率"
    assert label("eval", "dataset", "zh") == {"label": "数据集"}


def test_runs_are_described_for_the_page():
    from llamafactory.webui.interface import describe

    progress = Progress(current=2, total=4, percent=50.0, elapsed="0:00:02", remaining="0:00:02",
                        losses=[(1, 2.0), (2, 1.5)])
    running = RunStatus(kind="train", state="running", config_path="saves/a/training_args.yaml")
    assert describe(running, progress, "en") == (
        "running", 50.0, "50% · step 2/4 · 0:00:02 elapsed, 0:00:02 left",
        "Running `lmf train saves/a/training_args.yaml`")
    done = RunStatus(kind="train", state="finished", returncode=0, run_dir="saves/a")
    assert describe(done, progress, "en") == ("finished", 100.0, "100% · done",
                                              "Finished: results in `saves/a`. 2 loss points")
    failed = RunStatus(kind="train", state="failed", returncode=1, error="error: bad key")
    assert describe(failed, progress, "en") == ("failed", 50.0, "Failed",
                                                "❌ Failed (exit status 1): error: bad key")
    export = RunStatus(kind="export", state="running", percent=30.0, config_path="e.yaml")
    assert describe(export, None, "zh")[:3] == ("running", 30.0, "运行中……")
    stopped = RunStatus(kind="train", state="stopped", returncode=-2, run_dir="saves/a", previous="saves/a/previous_1")
    assert describe(stopped, progress, "en")[3] == (
        "Stopped. Checkpoints kept in `saves/a`: - (to continue, enter this folder as the output folder and tick "
        "resume).\n\nThe earlier run's files were moved to `saves/a/previous_1`.")
    assert describe(RunStatus(kind="export", state="stopped"), None, "en")[3] == "Stopped."


def test_launch_settings_and_arguments(monkeypatch):
    from llamafactory.webui.interface import launch_settings, run_webui

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SHARE", "0")
    assert launch_settings() == {"server_name": "127.0.0.1", "server_port": 7999, "share": False}
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SHARE", "1")
    assert launch_settings() == {"server_name": "0.0.0.0", "server_port": 7999, "share": True}
    from llamafactory.extras.errors import UserError

    with pytest.raises(UserError, match="takes no arguments"):
        run_webui(["cfg.yaml"])


def test_lmf_webui_is_a_command_and_help_stays_light():
    import subprocess
    import sys

    from llamafactory.cli import COMMANDS, NOT_BUILT, USAGE

    assert "webui" in COMMANDS and "webui" not in NOT_BUILT and "not built" not in USAGE.split("webui", 1)[1][:60]
    code = ("import sys, io, contextlib\nfrom llamafactory.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['help'])\n"
            "import llamafactory.webui\nassert 'gradio' not in sys.modules and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def handler(demo, name: str, min_inputs: int = 0):
    found = [f for f in demo.fns.values() if f.name == name and len(f.inputs) >= min_inputs]
    assert len(found) == 1, [f.name for f in demo.fns.values()]
    return found[0]


def train_values(demo, fn, **changes):
    m = demo.llamafactory_context.manager
    keys = {id(component): key for key, component in m.components.items()}
    values = []
    for component in fn.inputs:
        key = keys.get(id(component), "")
        name = key.split(".", 1)[-1]
        values.append(changes[name] if name in changes else component.value)
    return values


def test_save_then_load_arguments_through_the_page(tmp_path, monkeypatch):
    if not HAS_GRADIO:
        pytest.skip("gradio is the optional `webui` extra")
    from llamafactory.webui.interface import create_ui

    monkeypatch.chdir(tmp_path)
    demo = create_ui(device=CPU)
    save = handler(demo, "on_save")
    out = str(tmp_path / "run")
    values = train_values(demo, save, lang="en", dataset=["identity"], output_dir=out, lora_rank=32,
                          learning_rate="2e-4", extra_args='{"my_key": 1}')
    assert save.fn(*values) == f"Arguments saved to `{out}/training_args.yaml`."
    saved = open(f"{out}/training_args.yaml").read()
    assert "lora_rank: 32\n" in saved and "learning_rate: 0.0002\n" in saved and "my_key: 1\n" in saved

    load = handler(demo, "on_load", min_inputs=50)
    values = train_values(demo, load, lang="zh", config_path=out)  # a run folder: its training_args.yaml
    note, *updates = load.fn(*values)
    assert note == f"已从 `{out}/training_args.yaml` 载入参数；以下键放入其他参数：my_key。"
    m = demo.llamafactory_context.manager
    targets = dict(zip([id(c) for c in load.outputs[1:]], updates))
    assert targets[id(m["train.lora_rank"])] == 32 and targets[id(m["train.learning_rate"])] == "0.0002"
    assert targets[id(m["train.extra_args"])] == '{"my_key": 1}'
    assert targets[id(m["train.dataset"])]["value"] == ["identity"]

    missing = train_values(demo, load, lang="en", config_path=str(tmp_path / "none.yaml"))
    assert load.fn(*missing)[0] == f"⚠️ No arguments file at `{tmp_path}/none.yaml`."


def test_start_refuses_a_used_folder_and_shows_a_failed_run(tmp_path, monkeypatch):
    if not HAS_GRADIO:
        pytest.skip("gradio is the optional `webui` extra")
    from llamafactory.webui.interface import create_ui

    monkeypatch.chdir(tmp_path)
    demo = create_ui(device=CPU)
    start = handler(demo, "on_start", min_inputs=50)
    used = tmp_path / "used"
    used.mkdir()
    (used / "adapter_model.safetensors").write_text("")
    refused = start.fn(*train_values(demo, start, lang="en", dataset=["identity"], output_dir=str(used)))
    assert refused[1].startswith(f"⚠️ Output folder `{used}` already holds files")
    assert not demo.llamafactory_context.runner.running

    out = str(tmp_path / "bad")
    started = start.fn(*train_values(demo, start, lang="en", dataset=["identity"], output_dir=out,
                                     extra_args='{"lora_rnak": 8}'))
    assert started[1] == f"Running `lmf train {out}/training_args.yaml`"
    tick = handler(demo, "tick")
    demo.llamafactory_context.runner.wait(timeout=120)
    m = demo.llamafactory_context.manager
    values = ["en", *[c.value for c in tick.inputs[1:]]]
    updates = dict(zip([id(c) for c in tick.outputs], tick.fn(*values)))
    status = updates[id(m["train.status"])]
    assert status.startswith("❌ Failed (exit status 1): error: in ") and "unknown key `lora_rnak`" in status
    assert 'data-state="failed"' in updates[id(m["train.progress"])]
    assert "unknown key `lora_rnak`" in updates[id(m["train.log"])]
    assert updates[id(demo.llamafactory_context.timer)].active is False  # the run ended: ticking stops


def handler_of(demo, name: str, output: str):
    """The handler called `name` whose outputs include the component `output` (e.g. a tab's Start)."""
    target = demo.llamafactory_context.manager[output]
    found = [f for f in demo.fns.values() if f.name == name and any(o is target for o in f.outputs)]
    assert len(found) == 1, [f.name for f in demo.fns.values()]
    return found[0]


def quick_page(tmp_path, monkeypatch, launcher):
    if not HAS_GRADIO:
        pytest.skip("gradio is the optional `webui` extra")
    from llamafactory.webui.interface import create_ui
    from llamafactory.webui.runner import Runner

    monkeypatch.chdir(tmp_path)
    return create_ui(runner=Runner(launcher=launcher), device=CPU)


# Stands in for `lmf train`: writes what an evaluation leaves, so that its folder now holds results.
FINISH = [sys.executable, "-c", "import os, sys; open(os.path.join(os.path.dirname(sys.argv[2]), "
                                "'all_results.json'), 'w').write('{}')"]


def test_each_start_suggests_a_new_folder_for_the_next_run(tmp_path, monkeypatch):
    demo = quick_page(tmp_path, monkeypatch, FINISH)
    runner = demo.llamafactory_context.runner
    m = demo.llamafactory_context.manager
    for tab in ("eval", "train"):
        start = handler_of(demo, "on_start", f"{tab}.output_dir")
        outputs = [id(o) for o in start.outputs]
        folder = m[f"{tab}.output_dir"].value
        for _ in range(2):  # a second Start works without editing the folder by hand
            values = train_values(demo, start, lang="en", dataset=["identity"], output_dir=folder, overwrite=True)
            result = dict(zip(outputs, start.fn(*values)))
            assert result[id(m[f"{tab}.status"])].startswith("Running `lmf train"), result[id(m[f"{tab}.status"])]
            assert runner.wait(timeout=60) == 0 and os.listdir(folder)
            new = result[id(m[f"{tab}.output_dir"])]
            assert new != folder and not os.path.exists(new) and os.path.dirname(new) == os.path.dirname(folder)
            folder = new
        if tab == "train":  # overwrite and resume applied to the folder just used
            assert result[id(m["train.overwrite"])] is False and result[id(m["train.resume"])] is False


def test_only_start_with_overwrite_ticked_writes_overwrite_output_dir(tmp_path, monkeypatch):
    demo = quick_page(tmp_path, monkeypatch, FINISH)
    m, runner = demo.llamafactory_context.manager, demo.llamafactory_context.runner
    out = tmp_path / "run"
    save = handler(demo, "on_save")
    save.fn(*train_values(demo, save, lang="en", dataset=["identity"], output_dir=str(out), overwrite=True))
    assert "overwrite_output_dir" not in (out / "training_args.yaml").read_text()  # saved arguments never do
    start = handler_of(demo, "on_start", "train.output_dir")
    outputs = [id(o) for o in start.outputs]
    result = dict(zip(outputs, start.fn(*train_values(demo, start, lang="en", dataset=["identity"],
                                                      output_dir=str(out)))))
    assert runner.wait(timeout=60) == 0  # a folder holding only the page's files is a fresh one
    assert "overwrite_output_dir" not in (out / "training_args.yaml").read_text()
    assert start.fn(*train_values(demo, start, lang="en", dataset=["identity"], output_dir=str(out)))[1].startswith(
        f"⚠️ Output folder `{out}` already holds files")
    result = dict(zip(outputs, start.fn(*train_values(demo, start, lang="en", dataset=["identity"],
                                                      output_dir=str(out), overwrite=True))))
    runner.wait(timeout=60)
    assert "overwrite_output_dir: true\n" in (out / "training_args.yaml").read_text()
    previous = [n for n in os.listdir(out) if n.startswith("previous_")]
    assert len(previous) == 1 and (out / previous[0] / "all_results.json").is_file()
    assert f"The earlier run's files were moved to `{out / previous[0]}`." in result[id(m["train.status"])]


def test_a_stop_button_stops_only_its_tabs_run(tmp_path, monkeypatch):
    demo = quick_page(tmp_path, monkeypatch, [sys.executable, "-c", "import time; time.sleep(600)"])
    ctx = demo.llamafactory_context
    assert ctx.manager["export.stop"].elem_id == "export-stop"
    path = ctx.runner.start("export", "export", {}, str(tmp_path / "export"), "export_args.yaml")
    try:
        assert ctx.stop_run("train", "en") == (f"This tab has no run in progress: the run in progress (`{path}`) "
                                               "was started from the Export tab and is stopped there.")
        assert ctx.stop_run("eval", "zh").startswith("本页没有正在运行的任务") and ctx.runner.running
        assert ctx.stop_run("export", "en").startswith("Stopping")
        assert ctx.runner.wait(timeout=30) is not None
        assert ctx.stop_run("export", "en") == "Nothing is running."
    finally:
        ctx.runner.shutdown((1.0, 1.0, 1.0))
