"""`lmf eval` end to end on the demo task with the tiny model: results files, base vs adapter, config errors."""

import glob
import importlib.util
import json
import os

import pytest

from llamafactory.cli import main
from llamafactory.extras.errors import ConfigError, UserError
from llamafactory.hparams.parser import get_eval_args
from tests.eval.helpers import ROOT, build_lora_adapter

TASK_DIR = os.path.join(ROOT, "evaluation")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return build_lora_adapter(tiny_model_dir, str(tmp_path_factory.mktemp("eval-lora")))


def _check_results(results, total=40):
    assert list(results["categories"]) == ["STEM", "Social Sciences", "Humanities", "Other", "Average"]
    for entry in [*results["subjects"].values(), *results["categories"].values()]:
        assert 0 <= entry["accuracy"] <= 100
        assert entry["accuracy"] == pytest.approx(100 * entry["correct"] / entry["total"], abs=1e-4)
    assert results["categories"]["Average"]["total"] == total
    assert results["categories"]["Average"]["correct"] == sum(s["correct"] for s in results["subjects"].values())


def test_lmf_eval_on_the_demo_task_writes_results(tiny_model_dir, tmp_path, capsys):
    save_dir = tmp_path / "eval"
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model_name_or_path: {tiny_model_dir}\ntemplate: chatml\ntask: demo_test\ntask_dir: {TASK_DIR}\n"
                   f"n_shot: 5\nlang: en\nbatch_size: 4\nsave_dir: {save_dir}\n")
    assert main(["eval", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "demo_test (en, 5-shot): 4 subjects, 40 questions" in out and "Average" in out
    assert sorted(os.listdir(save_dir)) == ["results.json", "results.log"]
    report = json.loads((save_dir / "results.json").read_text())
    _check_results(report["results"])
    assert report["config"]["task"] == "demo_test" and report["config"]["n_shot"] == 5
    assert "base" not in report and "delta" not in report
    log = (save_dir / "results.log").read_text()
    assert log.startswith("demo_test (en, 5-shot)") and "everyday_knowledge" in log
    # A second run never overwrites the results.
    assert main(["eval", str(cfg)]) == 1
    assert f"save_dir `{save_dir}` already holds files" in capsys.readouterr().err


def test_zh_demo_runs_with_json_files(tiny_model_dir, capsys):
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", "template=chatml", "task=demo_zh_test",
                 f"task_dir={TASK_DIR}", "lang=zh", "n_shot=2"]) == 0
    assert "demo_zh_test (zh, 2-shot): 4 subjects, 20 questions" in capsys.readouterr().out


def test_compare_base_reports_both_and_the_delta(tiny_model_dir, adapter_dir, tmp_path, capsys):
    common = [f"model_name_or_path={tiny_model_dir}", "template=chatml", "task=demo_test", f"task_dir={TASK_DIR}",
              "n_shot=2", "batch_size=8"]
    assert main(["eval", *common, f"save_dir={tmp_path / 'plain'}"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())["results"]
    assert main(["eval", *common, f"adapter_name_or_path={adapter_dir}", "compare_base=true",
                 f"save_dir={tmp_path / 'both'}"]) == 0
    out = capsys.readouterr().out
    assert "Base" in out and "Adapter" in out and "Delta" in out
    report = json.loads((tmp_path / "both" / "results.json").read_text())
    assert report["base"] == plain  # the base run is the model without its adapter
    assert report["config"]["adapter_name_or_path"] == adapter_dir
    _check_results(report["results"])
    for part in ("categories", "subjects"):
        for key, value in report["delta"][part].items():
            after, before = report["results"][part][key]["accuracy"], report["base"][part][key]["accuracy"]
            assert value == pytest.approx(after - before)
    assert any(report["results"]["subjects"][k]["predictions"] != plain["subjects"][k]["predictions"]
               for k in plain["subjects"])  # the random adapter changes answers, so the comparison means something
    log = (tmp_path / "both" / "results.log").read_text()
    assert "Delta" in log.splitlines()[2] and "arithmetic" in log


def test_an_llamafactory_eval_config_parses_unchanged(tmp_path):
    cfg = tmp_path / "lf.yaml"
    cfg.write_text("model_name_or_path: m\nadapter_name_or_path: a\nfinetuning_type: lora\ntemplate: smollm2\n"
                   "trust_remote_code: true\ntask: mmlu_test\ntask_dir: evaluation\nn_shot: 5\nlang: en\n"
                   "batch_size: 4\nseed: 42\ndownload_mode: force_redownload\nsave_dir: saves/eval/x\n")
    model_args, data_args, eval_args, finetuning_args = get_eval_args([str(cfg), f"save_dir={tmp_path / 'new'}"])
    assert (eval_args.task, eval_args.n_shot, eval_args.batch_size, eval_args.lang) == ("mmlu_test", 5, 4, "en")
    assert data_args.template == "smollm2" and model_args.adapter_name_or_path == "a"
    defaults = get_eval_args(["model_name_or_path=m", "task=mmlu_test"])[2]
    assert (defaults.task_dir, defaults.batch_size, defaults.seed, defaults.lang, defaults.n_shot,
            defaults.save_dir, defaults.compare_base, defaults.eval_backend) == (
        "evaluation", 4, 42, "en", 5, None, False, "builtin")


@pytest.mark.parametrize(("argv", "message"), [
    (["model_name_or_path=m"], "missing required key `task`"),
    (["task=demo_test"], "missing required key `model_name_or_path`"),
    (["model_name_or_path=m", "task=demo_test", "compare_base=true"], "`compare_base: true` .* `adapter_name_or_path`"),
    (["model_name_or_path=m", "task=demo_test", "n_shot=-1"], "`n_shot` must be 0 or more"),
    (["model_name_or_path=m", "task=demo_test", "batch_size=0"], "`batch_size` must be at least 1"),
    (["model_name_or_path=m", "task=demo_test", "lang=fr"], "`lang` must be one of en, zh"),
    (["model_name_or_path=m", "task=demo_test", "lm_eval_tasks=arc_easy"], "only applies to `eval_backend: lm_eval`"),
    (["model_name_or_path=m", "task=demo_test", "learning_rate=1e-4"], "`learning_rate` is a training key"),
    (["model_name_or_path=m", "task=demo_test", "do_sample=false"], "generates nothing"),
    (["model_name_or_path=m", "task=demo_test", "n_shots=3"], "did you mean `n_shot`"),
])
def test_config_mistakes_are_refused_before_loading(argv, message):
    with pytest.raises(UserError, match=message):
        get_eval_args(argv)


def test_a_missing_task_is_refused_in_one_line_before_any_model_loads(tmp_path, capsys):
    assert main(["eval", "model_name_or_path=does/not-exist", "task=mmlu_test", f"task_dir={TASK_DIR}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == (f"error: task folder `{os.path.join(TASK_DIR, 'mmlu')}` not found (task: mmlu_test, task_dir: "
                   f"{TASK_DIR}); tasks there: demo, demo_zh")


def test_save_dir_holding_files_is_refused(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds files"):
        get_eval_args(["model_name_or_path=m", "task=demo_test", f"save_dir={tmp_path}"])
    get_eval_args(["model_name_or_path=m", "task=demo_test", f"save_dir={tmp_path / 'empty'}"])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "examples", "eval", "*.yaml"))),
                         ids=os.path.basename)
def test_eval_examples_parse(path, tmp_path):
    args = get_eval_args if "lm_eval" not in path or importlib.util.find_spec("lm_eval") else None
    if args is None:
        pytest.skip("lm-eval is not installed")
    _, _, eval_args, _ = args([path, f"save_dir={tmp_path / 'out'}"])
    if eval_args.eval_backend == "builtin":
        from llamafactory.eval.tasks import load_task

        assert load_task(os.path.join(ROOT, eval_args.task_dir), eval_args.task, eval_args.n_shot, eval_args.seed)


def test_the_console_script_runs_eval_and_reports_mistakes_in_one_line():
    from tests.conftest import run_lmf

    proc = run_lmf("eval", "task=demo_test")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: missing required key `model_name_or_path` (the model to evaluate: a hub id, a local folder or a "
        ".gguf file)"]


def test_llamafactorys_own_eval_config_runs_unchanged(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The shape of LlamaFactory's examples/train_lora/llama3_lora_eval.yaml, with `template: fewshot`: plain-text
    prompts, each example's answer closed by a blank line."""
    from llamafactory.eval import evaluator
    from llamafactory.eval.tasks import format_question, load_task

    prompts = []

    class Recording(evaluator.ChoiceScorer):
        def encode(self, subject, question, lang):
            encoded = super().encode(subject, question, lang)
            prompts.append((subject, question, self.tokenizer.decode(encoded[0])))
            return encoded

    monkeypatch.setattr(evaluator, "ChoiceScorer", Recording)
    save_dir = tmp_path / "saves" / "eval"
    cfg = tmp_path / "llama3_lora_eval.yaml"
    cfg.write_text(f"""### model
model_name_or_path: {tiny_model_dir}
trust_remote_code: true

### method
finetuning_type: lora

### dataset
task: demo_test
task_dir: {TASK_DIR}
template: fewshot
lang: en
n_shot: 5

### output
save_dir: {save_dir}

### eval
batch_size: 4
""")
    assert main(["eval", str(cfg)]) == 0
    assert "demo_test (en, 5-shot): 4 subjects, 40 questions" in capsys.readouterr().out
    report = json.loads((save_dir / "results.json").read_text())
    _check_results(report["results"])
    assert report["config"]["template"] == "fewshot"
    assert len(prompts) == 40
    subject, question, text = prompts[0]
    assert len(subject.shots) == 5
    assert text == ("Here are multiple-choice questions about arithmetic. Reply with the letter of the correct option "
                    "only.\n\n" + "".join(f"{format_question(shot, 'en')}{shot.answer_letter}\n\n"
                                          for shot in subject.shots) + format_question(question, "en"))
    assert "<|im_start|>" not in text and text.endswith("\nAnswer:")
    assert subject.shots == load_task(TASK_DIR, "demo_test", 5, 42).subjects[0].shots


def test_save_dir_is_created_before_any_model_loads(tmp_path, capsys):
    save_dir = tmp_path / "new" / "eval"
    get_eval_args(["model_name_or_path=m", "task=demo_test", f"save_dir={save_dir}"])
    assert save_dir.is_dir() and not os.listdir(save_dir)
    (tmp_path / "a_file").write_text("")
    bad = tmp_path / "a_file" / "eval"
    with pytest.raises(ConfigError, match=r"cannot create save_dir `.*a_file/eval`: Not a directory"):
        get_eval_args(["model_name_or_path=m", "task=demo_test", f"save_dir={bad}"])
    assert main(["eval", "model_name_or_path=does/not-exist", "task=demo_test", f"task_dir={TASK_DIR}",
                 f"save_dir={bad}"]) == 1
    assert "cannot create save_dir" in capsys.readouterr().err  # not a model-loading error: nothing was loaded


def test_results_that_appear_while_scoring_are_never_overwritten(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Two runs with the same save_dir both pass the empty-folder check; the one finishing second stops with an
    error and leaves the first one's files as they are."""
    from llamafactory.eval import evaluator

    save_dir = tmp_path / "shared"
    scored = evaluator.evaluate_model

    def other_run_finishes_meanwhile(*args, **kwargs):
        result = scored(*args, **kwargs)
        (save_dir / "results.json").write_text('{"other": "run"}')
        return result

    monkeypatch.setattr(evaluator, "evaluate_model", other_run_finishes_meanwhile)
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", "template=chatml", "task=demo_test",
                 f"task_dir={TASK_DIR}", "n_shot=0", "batch_size=8", f"save_dir={save_dir}"]) == 1
    captured = capsys.readouterr()
    assert "Average" in captured.out  # the table was printed before saving
    assert "results.json` appeared while this run was scoring" in captured.err
    assert sorted(os.listdir(save_dir)) == ["results.json"]
    assert (save_dir / "results.json").read_text() == '{"other": "run"}'


def test_results_files_are_created_exclusively_and_a_half_write_is_undone(tmp_path):
    from llamafactory.eval.report import write_results

    assert write_results(str(tmp_path), "{}\n", "table\n") == [str(tmp_path / "results.json"),
                                                               str(tmp_path / "results.log")]
    with pytest.raises(UserError, match="results.json` appeared"):
        write_results(str(tmp_path), "{}\n", "table\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.log").write_text("theirs")
    with pytest.raises(UserError, match="results.log` appeared"):
        write_results(str(other), "{}\n", "mine\n")
    assert sorted(os.listdir(other)) == ["results.log"] and (other / "results.log").read_text() == "theirs"
