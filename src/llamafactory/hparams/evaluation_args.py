"""`lmf eval`: which benchmark to run, how prompts are built and where results go (see docs/eval.md)."""

from dataclasses import dataclass

from .fields import arg

EVAL_BACKENDS = ("builtin", "lm_eval")


@dataclass
class EvaluationArguments:
    task: str | None = arg(None, "Task folder in task_dir plus the split to score, e.g. mmlu_test, cmmlu_test, "
                                 "ceval_validation, demo_test.")
    task_dir: str = arg("evaluation", "Folder holding the task folders (mapping.json + per-subject files).")
    batch_size: int = arg(4, "Questions scored per forward pass.")
    seed: int = arg(42, "Seed for the choice of few-shot examples (when the dev split has more than n_shot).")
    lang: str = arg("en", "Prompt wording: en (MMLU style) or zh (CMMLU / C-Eval style).", choices=("en", "zh"))
    n_shot: int = arg(5, "Solved examples from the dev split shown before each question.")
    save_dir: str | None = arg(None, "Where results.json and results.log are written; must be new or empty. It is "
                                     "created before scoring, and existing files are never overwritten.")
    download_mode: str = arg("reuse_dataset_if_exists", "Accepted for LlamaFactory configs: task folders are read "
                             "from disk on every run, so every mode reads them fresh.",
                             choices=("reuse_dataset_if_exists", "reuse_cache_if_exists", "force_redownload"))
    compare_base: bool = arg(False, "Also score the base model without `adapter_name_or_path` and report the "
                                    "difference (adapter - base) per category.")
    eval_backend: str = arg("builtin", "builtin: the multiple-choice evaluator of this project; lm_eval: "
                                       "lm-evaluation-harness (pip install lm-eval).", choices=EVAL_BACKENDS)
    lm_eval_tasks: str | None = arg(None, "eval_backend lm_eval: comma-separated lm-eval task names (default: "
                                          "`task`).")
    lm_eval_include_path: str | None = arg(None, "eval_backend lm_eval: folder of extra lm-eval task YAMLs, e.g. "
                                                 "tasks over local files (evaluation/lm_eval).")
