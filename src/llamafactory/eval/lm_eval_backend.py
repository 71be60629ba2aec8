"""`eval_backend: lm_eval`: lm-evaluation-harness tasks, by name, on the model this project loads.

The model is loaded exactly as for the builtin evaluator (adapters merged, quantization, GGUF, offline copy of
the default model) and handed to lm-eval's HFLM. `lm_eval_include_path` adds task YAMLs of your own, e.g. over
local files (evaluation/lm_eval/lmf_demo.yaml reads the demo task's CSVs). With `template` set to a chat
template, prompts go through it, few-shot examples as earlier turns; without it, or with the plain-text
`empty` / `fewshot`, lm-eval's plain prompts are used.
"""

import copy
import difflib
import gc
import json
import os
from typing import Any

from .. import __version__
from ..data.template import get_template_and_fix_tokenizer
from ..extras.errors import ConfigError, UserError
from ..extras.logging import get_logger
from ..model.loader import compute_dtype, load_model, load_tokenizer
from ..model.model_utils.hub import resolve_model
from .report import write_results

logger = get_logger(__name__)

INSTALL = "`pip install lm-eval` (or `pip install \"llamafactory[eval]\"`)"


def _import_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401 - fails early when its extras are missing
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError as err:
        raise UserError(f"`eval_backend: lm_eval` needs lm-evaluation-harness ({err}): {INSTALL}") from err
    return lm_eval


def task_names(eval_args: Any) -> list[str]:
    names = [t.strip() for t in (eval_args.lm_eval_tasks or eval_args.task or "").split(",") if t.strip()]
    if not names:
        raise ConfigError("missing required key `lm_eval_tasks` (comma-separated lm-eval task names)")
    return names


def task_manager(names: list[str], include_path: str | None) -> Any:
    """lm-eval's task index; only the include_path when it has every task (indexing lm-eval's own takes seconds)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not os.path.isdir(include_path):
        raise ConfigError(f"lm_eval_include_path `{include_path}` is not a folder")
    if include_path:
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if all(name in manager.all_tasks for name in names):
            return manager
    manager = TaskManager(include_path=include_path)
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else " (`lm_eval ls tasks` lists them)"
            raise ConfigError(f"unknown lm-eval task `{name}`{hint}")
    return manager


def uses_chat_template(data_args: Any) -> bool:
    """A chat template is applied when `template` names one; plain-text templates (`empty`, `fewshot`) and no
    template leave lm-eval's own plain prompts, whose few-shot examples are already separated."""
    return data_args.template is not None and data_args.template not in ("empty", "fewshot")


def run_lm_eval(model_args: Any, data_args: Any, eval_args: Any, finetuning_args: Any) -> dict[str, Any]:
    lm_eval = _import_lm_eval()
    from lm_eval.utils import make_table

    names = task_names(eval_args)
    manager = task_manager(names, eval_args.lm_eval_include_path)
    variants = [("results", model_args)]
    if eval_args.compare_base:
        base_args = copy.copy(model_args)
        base_args.adapter_name_or_path = None
        variants.insert(0, ("base", base_args))
    outputs: dict[str, Any] = {}
    for label, args in variants:
        outputs[label] = _evaluate(lm_eval, manager, names, args, data_args, eval_args, finetuning_args)

    report: dict[str, Any] = {"config": {
        "eval_backend": "lm_eval", "tasks": names, "lm_eval_include_path": eval_args.lm_eval_include_path,
        "n_shot": eval_args.n_shot, "seed": eval_args.seed, "batch_size": eval_args.batch_size,
        "model_name_or_path": model_args.model_name_or_path, "adapter_name_or_path": model_args.adapter_name_or_path,
        "template": data_args.template, "chat_template": uses_chat_template(data_args),
        "compare_base": eval_args.compare_base, "lm_eval_version": outputs["results"].get("lm_eval_version"),
        "llamafactory_version": __version__}}
    tables = []
    for label in ("base", "results"):
        if label in outputs:
            report[label] = metrics(outputs[label])
            title = {"base": "Base model (no adapter)", "results": "Model" if "base" not in outputs else "Adapter"}
            tables.append(f"{title[label]}:\n{make_table(outputs[label])}")
    if "base" in outputs:
        report["delta"] = {task: {metric: round(value - report["base"][task][metric], 6)
                                  for metric, value in values.items() if metric in report["base"].get(task, {})}
                           for task, values in report["results"].items()}
        tables.append("Delta (adapter - base):\n" + "\n".join(
            f"{task}  {metric}  {value:+.4f}" for task, values in report["delta"].items()
            for metric, value in values.items()))
    text = "\n\n".join(tables)
    print(text, flush=True)
    if eval_args.save_dir:
        report["lm_eval"] = {label: {key: out.get(key) for key in ("results", "n-shot", "versions", "configs")}
                             for label, out in outputs.items()}
        paths = write_results(eval_args.save_dir, json.dumps(report, ensure_ascii=False, indent=2, default=str)
                              + "\n", text + "\n")
        print(f"\nSaved {' and '.join(paths)}", flush=True)
    return report


def metrics(output: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{task: {"acc": 0.3, ...}}: lm-eval's numbers without the filter suffix and standard errors."""
    table: dict[str, dict[str, float]] = {}
    for task, values in output["results"].items():
        for key, value in values.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric} ({filter_name})"
            table.setdefault(task, {})[name] = float(value)
    return table


def _evaluate(lm_eval: Any, manager: Any, names: list[str], model_args: Any, data_args: Any, eval_args: Any,
              finetuning_args: Any) -> dict[str, Any]:
    from lm_eval.models.huggingface import HFLM

    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    data_args = copy.copy(data_args)
    data_args.enable_thinking = False
    get_template_and_fix_tokenizer(tokenizer, data_args)  # writes the template into tokenizer.chat_template
    model = load_model(tokenizer, model_args, finetuning_args, False, compute_dtype(None, finetuning_args, model_args),
                       source)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=eval_args.batch_size)
    chat = uses_chat_template(data_args)
    seed = eval_args.seed
    output = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=eval_args.n_shot, task_manager=manager,
                                     log_samples=False, apply_chat_template=chat, fewshot_as_multiturn=chat,
                                     random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                     fewshot_random_seed=seed)
    del lm, model
    gc.collect()
    if output is None:  # only a non-zero rank of a distributed run gets None
        raise UserError("lm-eval returned no results")
    return output
