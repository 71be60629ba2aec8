"""run_exp: parse the configuration, check the environment, run the stage's recipe."""

from typing import Any

from ..extras.logging import get_logger
from ..extras.packages import check_dependencies
from ..hparams.parser import get_train_args

logger = get_logger(__name__)


def run_exp(argv: list[str], callbacks: list[Any] | None = None) -> None:
    check_dependencies()
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(argv)

    from .callbacks import LogCallback

    callbacks = [LogCallback(), *(callbacks or [])]
    if finetuning_args.stage == "sft":
        from .sft.workflow import run_sft as run
    elif finetuning_args.stage == "pt":
        from .pt.workflow import run_pt as run
    else:  # the parser refuses stages that are not built; this guards the dispatch table
        raise AssertionError(f"no recipe for stage {finetuning_args.stage}")
    run(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)
