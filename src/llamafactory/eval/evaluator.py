"""`lmf eval cfg.yaml`: multiple-choice accuracy per subject and category (MMLU / CMMLU / C-Eval style).

The recipe: read the config; read and check every task file; for the model (and, with `compare_base`, the
same model without its adapter) load tokenizer, template and weights and score each subject; print the
category table; write results.json and results.log to `save_dir`. `eval_backend: lm_eval` hands the loaded
model to lm-evaluation-harness instead (lm_eval_backend.py).
"""

import copy
import gc
import json
import time
from typing import Any

from .. import __version__
from ..data.template import get_template_and_fix_tokenizer
from ..extras.logging import get_logger
from ..hparams.parser import get_eval_args
from ..model.loader import compute_dtype, load_model, load_tokenizer
from ..model.model_utils.hub import resolve_model
from . import report as reporting
from .scorer import ChoiceScorer, SubjectScores
from .tasks import Task, load_task

logger = get_logger(__name__)

PLAIN_TEMPLATES = ("empty", "fewshot")  # plain text, no chat format: prompts use `fewshot`


def run_eval(argv: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Evaluate, print the table, save the results; returns what results.json holds."""
    if isinstance(argv, dict):
        argv = [f"{key}={json.dumps(value)}" for key, value in argv.items()]  # JSON values are valid YAML
    model_args, data_args, eval_args, finetuning_args = get_eval_args(list(argv))
    if eval_args.eval_backend == "lm_eval":
        from .lm_eval_backend import run_lm_eval

        return run_lm_eval(model_args, data_args, eval_args, finetuning_args)

    task = load_task(eval_args.task_dir, eval_args.task, eval_args.n_shot, eval_args.seed)
    runs: dict[str, dict[str, Any]] = {}
    if eval_args.compare_base:
        base_args = copy.copy(model_args)
        base_args.adapter_name_or_path = None
        runs["base"] = evaluate_model(task, base_args, data_args, eval_args, finetuning_args, "base")
    runs["results"] = evaluate_model(task, model_args, data_args, eval_args, finetuning_args,
                                     "adapter" if eval_args.compare_base else "model")

    report: dict[str, Any] = {"config": _config(task, model_args, data_args, eval_args, finetuning_args),
                              "results": runs["results"]}
    if "base" in runs:
        report["base"] = runs["base"]
        report["delta"] = reporting.delta(runs["results"], runs["base"])
    print(reporting.render(report), flush=True)
    if eval_args.save_dir:
        paths = reporting.save(report, eval_args.save_dir)
        print(f"\nSaved {' and '.join(paths)}", flush=True)
    return report


def evaluate_model(task: Task, model_args: Any, data_args: Any, eval_args: Any, finetuning_args: Any,
                   label: str) -> dict[str, Any]:
    """Load one model and score every subject of the task; returns the per-subject and per-category summary."""
    from tqdm import tqdm
    from transformers import set_seed

    set_seed(eval_args.seed)
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    tokenizer.padding_side = "left"
    template = eval_template(tokenizer, data_args)
    model = load_model(tokenizer, model_args, finetuning_args, False, compute_dtype(None, finetuning_args, model_args),
                       source)
    scorer = ChoiceScorer(model, tokenizer, template, task.num_options, eval_args.batch_size, data_args.cutoff_len)
    scores: dict[str, SubjectScores] = {}
    start = time.perf_counter()
    total = sum(len(s.questions) for s in task.subjects)
    with tqdm(total=total, desc=f"Scoring {label}", unit="q") as progress:
        for subject in task.subjects:
            progress.set_postfix_str(subject.key)
            scores[subject.key] = scorer.score(subject, eval_args.lang, progress)
    fewer = sum(s.fewer_shots for s in scores.values())
    if fewer:
        logger.warning("%d of %d prompts were longer than cutoff_len (%d) and dropped some few-shot examples; "
                       "raise `cutoff_len` to keep them", fewer, total, data_args.cutoff_len)
    cut = sum(s.truncated for s in scores.values())
    if cut:
        logger.warning("%d questions were longer than cutoff_len (%d) even without examples and were cut from the "
                       "left", cut, data_args.cutoff_len)
    logger.info("Scored %d questions in %.1f s (%s).", total, time.perf_counter() - start, label)
    del model, scorer
    gc.collect()
    return reporting.summarize(task, scores)


def eval_template(tokenizer: Any, data_args: Any) -> Any:
    """The template prompts are built with. Reasoning prompts end with an empty thought (registered reasoning
    templates, and a model's own chat template that reads `enable_thinking`), so the reply begins with the
    answer letter. Plain text (`template: empty`, or no template and a tokenizer without a chat template)
    becomes `fewshot`, which closes each example's answer with a blank line instead of running the next
    question on: `Answer:A` then an empty line, not `Answer:AWhat is ...`."""
    data_args = copy.copy(data_args)
    data_args.enable_thinking = False
    if data_args.template in PLAIN_TEMPLATES or (data_args.template is None
                                                 and not getattr(tokenizer, "chat_template", None)):
        if data_args.template != "fewshot":
            logger.info("Plain-text prompts: using template `fewshot` (examples separated by a blank line).")
        data_args.template = "fewshot"
    return get_template_and_fix_tokenizer(tokenizer, data_args)


def _config(task: Task, model_args: Any, data_args: Any, eval_args: Any, finetuning_args: Any) -> dict[str, Any]:
    return {"task": eval_args.task, "task_dir": eval_args.task_dir, "task_folder": task.folder, "split": task.split,
            "lang": eval_args.lang, "n_shot": eval_args.n_shot, "seed": eval_args.seed,
            "batch_size": eval_args.batch_size, "cutoff_len": data_args.cutoff_len,
            "model_name_or_path": model_args.model_name_or_path,
            "adapter_name_or_path": model_args.adapter_name_or_path, "finetuning_type": finetuning_args.finetuning_type,
            "quantization_bit": model_args.quantization_bit, "template": data_args.template,
            "compare_base": eval_args.compare_base, "scoring": "logits of the answer letters' first tokens where the "
            "assistant reply begins", "llamafactory_version": __version__}
