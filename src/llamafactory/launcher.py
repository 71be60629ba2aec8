"""Start a training run in this process, or (later) under torchrun for several processes.

FORCE_TORCHRUN is read here and only here.
"""

from .extras import envs
from .extras.errors import NotBuiltError


def launch(argv: list[str]) -> None:
    if envs.force_torchrun():
        raise NotBuiltError("FORCE_TORCHRUN: multi-process launch is not supported yet; unset it to train in "
                            "one process")
    from .train.tuner import run_exp

    run_exp(argv)


if __name__ == "__main__":  # entry point for future torchrun children: python -m llamafactory.launcher cfg.yaml
    import sys

    launch(sys.argv[1:])
