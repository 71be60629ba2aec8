"""Start a training run in this process, or (later) under torchrun for several processes.

FORCE_TORCHRUN is read here and only here.
"""

from .extras import envs
from .extras.errors import NotBuiltError

DRY_RUN_FLAGS = ("--dry-run", "--dry_run")


def launch(argv: list[str]) -> None:
    dry_run = any(flag in argv for flag in DRY_RUN_FLAGS)
    argv = [a for a in argv if a not in DRY_RUN_FLAGS]
    if envs.force_torchrun() and not dry_run:
        raise NotBuiltError("FORCE_TORCHRUN: multi-process launch is not supported yet; unset it to train in "
                            "one process")
    from .train.tuner import run_exp

    run_exp(argv, dry_run=dry_run)


if __name__ == "__main__":  # entry point for future torchrun children: python -m llamafactory.launcher cfg.yaml
    import sys

    launch(sys.argv[1:])
