"""`eval_backend: lm_eval`: a clear error without the package; with it, the demo task over local files."""

import importlib.util
import json
import sys

import pytest

from llamafactory.cli import main
from llamafactory.extras.errors import UserError
from llamafactory.hparams.parser import get_eval_args
from tests.eval.helpers import ROOT, build_lora_adapter

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail as if it were not installed
    with pytest.raises(UserError, match=r"needs lm-evaluation-harness, which is not installed: `pip install lm-eval`"):
        get_eval_args(["model_name_or_path=m", "eval_backend=lm_eval", "lm_eval_tasks=arc_easy"])
    assert main(["eval", "model_name_or_path=m", "eval_backend=lm_eval", "lm_eval_tasks=arc_easy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install lm-eval" in err
    from llamafactory.eval.lm_eval_backend import _import_lm_eval

    with pytest.raises(UserError, match="pip install lm-eval"):
        _import_lm_eval()


def test_lm_eval_needs_tasks():
    with pytest.raises(UserError, match="missing required key `lm_eval_tasks`"):
        get_eval_args(["model_name_or_path=m", "eval_backend=lm_eval"])


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed (pip install lm-eval)")
def test_lm_eval_runs_the_local_demo_task_with_and_without_the_adapter(tiny_model_dir, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.chdir(ROOT)  # evaluation/lm_eval/lmf_demo.yaml names its CSV files from the repository root
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    adapter = build_lora_adapter(tiny_model_dir, str(tmp_path / "lora"))
    save_dir = tmp_path / "lm"
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={adapter}", "template=chatml",
                 "eval_backend=lm_eval", "lm_eval_tasks=lmf_demo", "lm_eval_include_path=evaluation/lm_eval",
                 "n_shot=2", "batch_size=8", "compare_base=true", f"save_dir={save_dir}"]) == 0
    report = json.loads((save_dir / "results.json").read_text())
    for label in ("base", "results"):
        assert 0 <= report[label]["lmf_demo"]["acc"] <= 1
        assert report["lm_eval"][label]["results"]["lmf_demo"]["sample_len"] == 40
        assert report["lm_eval"][label]["n-shot"]["lmf_demo"] == 2
    assert report["delta"]["lmf_demo"]["acc"] == pytest.approx(report["results"]["lmf_demo"]["acc"]
                                                               - report["base"]["lmf_demo"]["acc"])
    assert report["config"]["chat_template"] is True
    out = capsys.readouterr().out
    assert "lmf_demo" in out and "Delta (adapter - base)" in out
    assert "lmf_demo" in (save_dir / "results.log").read_text()


def test_plain_text_templates_leave_lm_evals_own_prompts():
    from llamafactory.eval.lm_eval_backend import uses_chat_template
    from llamafactory.hparams import DataArguments

    assert uses_chat_template(DataArguments(template="chatml"))
    for template in (None, "empty", "fewshot"):
        assert not uses_chat_template(DataArguments(template=template))
