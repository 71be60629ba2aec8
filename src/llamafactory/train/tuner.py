"""run_exp: parse the configuration, check the environment, run the stage's recipe."""

import importlib
from typing import Any

from ..extras.logging import get_logger
from ..extras.packages import check_dependencies
from ..hparams.parser import get_train_args

logger = get_logger(__name__)


def run_exp(argv: list[str], callbacks: list[Any] | None = None, dry_run: bool = False) -> None:
    check_dependencies()
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(argv, dry_run=dry_run)
    if dry_run:
        from .dry_run import dry_run as check

        check(model_args, data_args, training_args, finetuning_args)
        return

    from transformers import set_seed

    from .callbacks import LogCallback

    set_seed(training_args.seed)  # before the model exists: adapter weights are initialised at load time
    callbacks = [LogCallback(), *(callbacks or [])]
    if finetuning_args.pissa_convert:
        from .callbacks import PissaConvertCallback

        callbacks.append(PissaConvertCallback())
    recipes = {"sft": ".sft.workflow:run_sft", "pt": ".pt.workflow:run_pt", "rm": ".rm.workflow:run_rm",
               "dpo": ".dpo.workflow:run_dpo", "kto": ".kto.workflow:run_kto", "ppo": ".ppo.workflow:run_ppo",
               "grpo": ".grpo.workflow:run_grpo"}
    module, name = recipes[finetuning_args.stage].split(":")  # the parser refuses any other stage
    run = getattr(importlib.import_module(module, __package__), name)
    run(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)


def run_data(action: str, argv: list[str], count: int = 3) -> None:
    """`lmf data preview|stats|tokenize`: load the data exactly as training would, then show or save it."""
    from ..data import preview
    from ..data.loader import get_dataset
    from ..data.template import get_template_and_fix_tokenizer
    from ..extras.errors import ConfigError
    from ..hparams.parser import get_data_args
    from ..model.loader import load_processor, load_tokenizer

    model_args, data_args, run_args, finetuning_args = get_data_args(argv)
    if action == "tokenize":
        _check_tokenize_target(data_args)
    run_args.should_save = action == "tokenize"  # preview and stats only look, even with a new tokenized_path
    tokenizer = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    stage = finetuning_args.stage
    if run_args.predict_with_generate and stage == "sft":
        stage = "predict"  # a generation run tokenizes prompts only
    report: dict[str, Any] = {}
    processor = load_processor(model_args, tokenizer)
    module = get_dataset(template, model_args, data_args, run_args, stage, tokenizer, report, processor)
    dataset = module.get("train_dataset")
    if dataset is None:  # `dataset` is required, so only an earlier tokenized_path can lack a training split
        raise ConfigError(f"`tokenized_path` {data_args.tokenized_path} holds no training split to show")
    if action == "preview":
        preview.preview(dataset, tokenizer, stage, count)
        return
    preview.stats(dataset, report, data_args, run_args, stage)
    if action == "tokenize":
        evals = module.get("eval_dataset") or {}
        held = sum(map(len, evals.values())) if isinstance(evals, dict) else len(evals)
        print(f"Saved {len(dataset):,} training and {held:,} evaluation examples "
              f"to {data_args.tokenized_path}; a run with `tokenized_path: {data_args.tokenized_path}` trains on "
              "them without tokenizing again.")


def _check_tokenize_target(data_args: Any) -> None:
    """`lmf data tokenize` writes a new folder: it never overwrites, nor silently loads an earlier one."""
    import os

    from ..extras.errors import ConfigError

    path = data_args.tokenized_path
    if not path:
        raise ConfigError("`lmf data tokenize` saves the tokenized dataset to `tokenized_path`: set it, e.g. "
                          "tokenized_path=data/tokenized")
    if data_args.streaming:
        raise ConfigError("`streaming: true` tokenizes on the fly, so there is nothing to save: remove `streaming` "
                          "to tokenize into `tokenized_path`")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ConfigError(f"`tokenized_path` {path} already exists and is not an empty folder; remove it or choose "
                          "another path (a run with this path loads what it holds)")


def export_model(argv: list[str]) -> None:
    """`lmf export`: merge adapters and write a standalone model (see train/export.py)."""
    check_dependencies()
    from .export import export_model as export

    export(argv)
