"""`llamafactory-cli` / `lmf`: one command, dispatching to subcommands that import heavy libraries lazily."""

import sys
from collections.abc import Callable

from . import __version__
from .extras import envs

USAGE = f"""llamafactory {__version__}: fine-tune large language models from YAML configs.

Usage: lmf <command> [config.yaml] [key=value ...] [--key value ...]

Commands:
  train     fine-tune a model:                lmf train examples/train_lora/smollm2_lora_sft.yaml
  chat      chat with a model in the terminal: lmf chat examples/inference/smollm2_lora_sft.yaml
  data      see the training data as the model will: lmf data preview|stats cfg.yaml [-n 3]
            tokenize it once, for later runs:   lmf data tokenize cfg.yaml tokenized_path=data/tok
  api       serve an OpenAI-compatible API:   lmf api examples/inference/smollm2_lora_sft.yaml
  export    merge adapters, write HF or GGUF: lmf export examples/merge_lora/smollm2_lora_sft.yaml
  webui     open the web UI (no YAML needed): lmf webui
  webchat   open a browser chat page:         lmf webchat examples/inference/smollm2_lora_sft.yaml
  eval      multiple-choice benchmarks:       lmf eval examples/eval/smollm2_demo.yaml
  env       print versions and hardware for bug reports
  version   print the version
  help      print this message

Config keys follow LlamaFactory's (model_name_or_path, template, dataset, stage, finetuning_type, ...).
Overrides after the file win: lmf train cfg.yaml learning_rate=5e-5 max_steps=10
Set LLAMAFACTORY_VERBOSITY=DEBUG for tracebacks."""

NOT_BUILT: set[str] = set()


def _train(argv: list[str]) -> int:
    from .launcher import launch

    return launch(argv)  # under torchrun: its exit status, which is the failing worker's


def _chat(argv: list[str]) -> None:
    from .chat.chat_model import run_chat

    run_chat(argv)


def _api(argv: list[str]) -> None:
    from .extras.errors import UserError

    try:
        from .api.app import run_api
    except ImportError as err:
        raise UserError(f"`lmf api` needs fastapi, uvicorn and sse-starlette ({err}): "
                        "`pip install fastapi uvicorn sse-starlette`") from err
    run_api(argv)


def _export(argv: list[str]) -> None:
    from .train.tuner import export_model

    export_model(argv)


def _webui(argv: list[str]) -> None:
    from .webui import run_webui

    run_webui(argv)


def _webchat(argv: list[str]) -> None:
    from .chat.webchat import run_webchat

    run_webchat(argv)


def _data(argv: list[str]) -> None:
    from .extras.errors import ConfigError

    if not argv or argv[0] not in ("preview", "stats", "tokenize"):
        raise ConfigError("usage: lmf data preview|stats|tokenize cfg.yaml [key=value ...] [-n N]")
    count = 3
    rest = list(argv[1:])
    if "-n" in rest:
        i = rest.index("-n")
        try:
            count = int(rest[i + 1])
        except (IndexError, ValueError) as err:
            raise ConfigError("`-n` needs a number of examples, e.g. -n 5") from err
        del rest[i:i + 2]
    from .train.tuner import run_data

    run_data(argv[0], rest, count)


def _eval(argv: list[str]) -> None:
    from .eval.evaluator import run_eval

    run_eval(argv)


def _env(argv: list[str]) -> None:
    from .extras.env import print_env

    print_env()


def _version(argv: list[str]) -> None:
    print(f"llamafactory {__version__}")


def _help(argv: list[str]) -> None:
    print(USAGE)


COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "train": _train,
    "chat": _chat,
    "api": _api,
    "webchat": _webchat,
    "webui": _webui,
    "export": _export,
    "data": _data,
    "eval": _eval,
    "env": _env,
    "version": _version,
    "help": _help,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("-v", "--version"):
        command = "version"
    if command in NOT_BUILT:
        print(f"error: `lmf {command}` is not built yet in llamafactory {__version__}", file=sys.stderr)
        return 1
    if command not in COMMANDS:
        print(f"error: unknown command `{command}`\n\n{USAGE}", file=sys.stderr)
        return 2
    from .extras.errors import UserError

    envs.bound_cpu_kernel_caches()
    try:
        status = COMMANDS[command](rest)
    except UserError as err:
        if envs.debug():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
