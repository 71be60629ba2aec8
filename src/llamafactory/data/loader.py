"""Load the named datasets, align their formats, tokenize them and split off evaluation data."""

import copy
import json
import os
from typing import Any

import numpy as np

from ..extras import envs
from ..extras.errors import ConfigError, NotBuiltError, UserError
from ..extras.logging import get_logger
from ..extras.network import hub_online
from .converter import ALIGNED_COLUMNS, MEDIA_COLUMNS, MEDIA_ORIGIN, MediaSource, align_dataset, with_media_columns
from .parser import DatasetAttr, get_dataset_list
from .processor import MEDIA_CUT, get_processor

logger = get_logger(__name__)

FILE_TYPES = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow", "txt": "text"}


def _data_files(attr: DatasetAttr) -> tuple[str, list[str]]:
    path = attr.path
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if not f.startswith("."))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ConfigError(f"dataset `{attr.name}`: file `{path}` not found")
    if not files:
        raise ConfigError(f"dataset `{attr.name}`: folder `{path}` is empty")
    kinds = {os.path.splitext(f)[1].lstrip(".").lower() for f in files}
    unknown = sorted(k for k in kinds if k not in FILE_TYPES)
    if unknown:
        raise ConfigError(f"dataset `{attr.name}`: `.{unknown[0]}` files are not supported "
                          f"(supported: {', '.join('.' + k for k in FILE_TYPES)})")
    builders = {FILE_TYPES[k] for k in kinds}
    if len(builders) > 1:
        raise ConfigError(f"dataset `{attr.name}`: folder `{path}` mixes file types; keep one type per dataset")
    return builders.pop(), files


def _read_source(attr: DatasetAttr, model_args: Any, data_args: Any) -> Any:
    """The raw rows of one dataset, from a local file or folder or from a hub."""
    from datasets import load_dataset

    streaming = data_args.streaming
    if attr.load_from == "file":
        builder, files = _data_files(attr)
        logger.info("Loading dataset %s from %s...", attr.name, attr.path)
        try:
            dataset = load_dataset(builder, data_files=files, split=attr.split, cache_dir=model_args.cache_dir)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs the file name
            raise ConfigError(f"dataset `{attr.name}`: cannot read {attr.path} as {builder}: "
                              f"{_json_error(files) or ' '.join(str(err).split())[:400]}") from err
        return dataset.to_iterable_dataset() if streaming else dataset
    if attr.load_from == "hf_hub":
        if not envs.hub_offline() and not hub_online():
            raise UserError(f"dataset `{attr.name}` comes from the Hugging Face hub (`{attr.path}`), which cannot "
                            "be reached; download it and register it with `file_name` instead")
        logger.info("Loading dataset %s from the hub (%s)...", attr.name, attr.path)
        try:
            return load_dataset(attr.path, name=attr.subset, data_dir=attr.folder, split=attr.split,
                                cache_dir=model_args.cache_dir, token=model_args.hf_hub_token, streaming=streaming)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"dataset `{attr.name}`: cannot load `{attr.path}` from the hub: "
                            f"{' '.join(str(err).split())[:300]}") from err
    if attr.load_from == "ms_hub":
        try:
            from modelscope import MsDataset
        except ImportError as err:
            raise UserError(f"dataset `{attr.name}` is on ModelScope (`ms_hub_url`): `pip install modelscope`") from err
        dataset = MsDataset.load(attr.path, subset_name=attr.subset, data_dir=attr.folder, split=attr.split,
                                 cache_dir=model_args.cache_dir, use_streaming=streaming)
        return dataset.to_hf_dataset() if hasattr(dataset, "to_hf_dataset") else dataset
    if attr.load_from == "script":
        raise UserError(f"dataset `{attr.name}`: loading scripts (`script_url`) are no longer supported by the "
                        "datasets library; convert the data to json/parquet and use `file_name`")
    if attr.load_from == "cloud_file":
        kind = os.path.splitext(attr.path)[1].lstrip(".").lower()
        if kind not in FILE_TYPES:
            raise ConfigError(f"dataset `{attr.name}`: cannot tell the type of `{attr.path}`; expected one of "
                              f"{', '.join('.' + k for k in FILE_TYPES)}")
        logger.info("Loading dataset %s from %s...", attr.name, attr.path)
        try:  # s3://, gs://, https:// ... through fsspec, as datasets supports them
            return load_dataset(FILE_TYPES[kind], data_files=attr.path, split=attr.split,
                                cache_dir=model_args.cache_dir, streaming=streaming)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"dataset `{attr.name}`: cannot read `{attr.path}`: {' '.join(str(err).split())[:300]}"
                            ) from err
    raise NotBuiltError(f"dataset `{attr.name}`: `{attr.load_from}` sources (om_hub_url) are not supported yet; "
                        "download the data and use `file_name`")


def _json_error(files: list[str]) -> str | None:
    """File and line of a JSON syntax error, which datasets' own message hides."""
    for path in files:
        if not path.endswith((".json", ".jsonl")):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            if path.endswith(".jsonl"):
                for number, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            json.loads(line)
                        except json.JSONDecodeError as err:
                            return f"{path}:{number}:{err.colno}: JSON syntax error: {err.msg}"
            else:
                json.loads(text)
        except json.JSONDecodeError as err:
            return f"{path}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}"
    return None


def _sample(dataset: Any, attr: DatasetAttr, data_args: Any, seed: int) -> Any:
    if data_args.streaming:
        limit = min(n for n in (attr.num_samples, data_args.max_samples) if n) if (
            attr.num_samples or data_args.max_samples) else None
        return dataset.take(limit) if limit else dataset
    if attr.num_samples:
        # LlamaFactory's meaning: a random sample of that size, drawn with repeats when it exceeds the
        # dataset (so num_samples can up-weight a small dataset in a mix).
        rng = np.random.default_rng(seed)
        indices = rng.permutation(len(dataset))[: attr.num_samples]
        if attr.num_samples > len(dataset):
            extra = rng.choice(len(dataset), attr.num_samples - len(dataset))
            indices = np.concatenate([indices, extra])
        logger.info("Dataset %s: sampled %d examples from %d (num_samples).", attr.name, len(indices), len(dataset))
        dataset = dataset.select(indices.tolist())
    if data_args.max_samples and data_args.max_samples < len(dataset):
        logger.info("Dataset %s: using the first %d of %d examples (max_samples).", attr.name,
                    data_args.max_samples, len(dataset))
        dataset = dataset.select(range(data_args.max_samples))
    return dataset


def _drop_invalid(dataset: Any, attr: DatasetAttr, streaming: bool, report: dict[str, Any] | None = None) -> Any:
    """Remove rows that break their format, and say how many, why, and which."""
    if streaming:  # counting would read the whole stream; invalid rows are skipped as they come
        return dataset.filter(lambda ex: not ex["_drop"]).remove_columns("_drop")
    reasons = dataset["_drop"]
    bad: dict[str, list[int]] = {}
    for row, reason in enumerate(reasons):
        if reason:
            bad.setdefault(reason, []).append(row)
    if report is not None:
        report[attr.name] = {"rows": len(reasons), "dropped": {reason: len(rows) for reason, rows in bad.items()}}
    if not bad:
        return dataset.remove_columns("_drop")
    total = sum(len(rows) for rows in bad.values())
    common = max(bad, key=lambda k: len(bad[k]))
    if total == len(reasons):
        raise ConfigError(f"dataset `{attr.name}` ({attr.path}) has no valid rows: all {total} break the "
                          f"{attr.formatting} format, most often `{common}` (rows {_rows(bad[common])})")
    details = "; ".join(f"{len(rows)} {reason} (rows {_rows(rows)})" for reason, rows in
                        sorted(bad.items(), key=lambda kv: -len(kv[1])))
    logger.warning("Dataset %s: dropped %d of %d rows: %s.", attr.name, total, len(reasons), details)
    return dataset.filter(lambda ex: not ex["_drop"]).remove_columns("_drop")


def _rows(rows: list[int], shown: int = 5) -> str:
    return ", ".join(map(str, rows[:shown])) + (", ..." if len(rows) > shown else "")


RANKING_STAGES = ("rm", "dpo")
UNSUPERVISED_STAGES = ("pt", "ppo", "grpo", "predict")


def _check_stage(attr: DatasetAttr, stage: str) -> None:
    if stage in RANKING_STAGES and not attr.ranking:
        raise ConfigError(f"dataset `{attr.name}` is not ranking data, which stage `{stage}` needs: register a "
                          "dataset with `ranking: true` and chosen/rejected columns")
    if stage not in RANKING_STAGES and attr.ranking:
        raise ConfigError(f"dataset `{attr.name}` is ranking data (`ranking: true`); stage `{stage}` needs "
                          "ordinary examples (use it with stage rm or dpo)")
    if stage == "kto" and not attr.column("kto_tag"):
        raise ConfigError(f"dataset `{attr.name}` has no `kto_tag` column, which stage `kto` needs")


def load_single_dataset(attr: DatasetAttr, model_args: Any, data_args: Any, seed: int = 42,
                        stage: str = "sft", report: dict[str, Any] | None = None) -> Any:
    _check_stage(attr, stage)
    dataset = _sample(_read_source(attr, model_args, data_args), attr, data_args, seed)
    media = MediaSource(os.path.abspath(data_args.media_dir or data_args.dataset_dir),
                        allow_urls=data_args.media_allow_urls, cache_dir=model_args.cache_dir or envs.cache_dir())
    aligned = align_dataset(dataset, attr, None if data_args.streaming else worker_processes(data_args),
                            data_args.overwrite_cache, needs_response=stage not in UNSUPERVISED_STAGES, media=media)
    return _drop_invalid(aligned, attr, data_args.streaming, report)


def _merge(datasets: list[Any], data_args: Any, seed: int) -> Any:
    from datasets import concatenate_datasets, interleave_datasets

    if len(datasets) == 1:
        return datasets[0]
    if any(MEDIA_COLUMNS[0] in (d.column_names or []) for d in datasets):  # text and media datasets mixed
        datasets = [with_media_columns(d) for d in datasets]
    strategy = data_args.mix_strategy
    if strategy == "concat":
        return concatenate_datasets(datasets)
    probs = [float(p) for p in data_args.interleave_probs.split(",")] if data_args.interleave_probs else None
    if probs is not None and len(probs) != len(datasets):
        raise ConfigError(f"`interleave_probs` has {len(probs)} values for {len(datasets)} datasets")
    stopping = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted",
                "interleave_once": "all_exhausted_without_replacement"}[strategy]
    return interleave_datasets(datasets, probabilities=probs, seed=seed, stopping_strategy=stopping)


def worker_processes(data_args: Any) -> int | None:
    """`num_proc` for datasets' map: 1 worker means the main process, as it did before datasets 5, which now
    forks a one-process pool for it and pickles the whole processor and tokenizer across (seconds, for nothing)."""
    workers = data_args.preprocessing_num_workers
    return workers if workers and workers > 1 else None


def _tokenize(dataset: Any, stage: str, template: Any, tokenizer: Any, data_args: Any, what: str,
              mm_processor: Any = None) -> Any:
    processor = get_processor(stage, template, tokenizer, data_args, mm_processor)
    streaming = data_args.streaming
    kwargs: dict[str, Any] = {}
    if not streaming:
        kwargs = dict(num_proc=worker_processes(data_args), load_from_cache_file=not data_args.overwrite_cache,
                      desc=f"Running tokenizer on {what} dataset")
    columns = dataset.column_names  # None for a mapped stream, which ignores absent columns
    remove = list(ALIGNED_COLUMNS) + [c for c in (*MEDIA_COLUMNS, MEDIA_ORIGIN) if columns is None or c in columns]
    tokenized = dataset.map(processor.preprocess, batched=True, batch_size=data_args.preprocessing_batch_size,
                            remove_columns=remove, **kwargs)
    if streaming:
        return tokenized
    if stage != "pt":
        dropped = len(dataset) - len(tokenized)
        if dropped:
            logger.warning("Dropped %d of %d %s examples that stage %s cannot use (no answer, or not the "
                           "shape it needs).", dropped, len(dataset), what, stage)
    tokenized = _drop_media_cut(tokenized, data_args, what)
    if len(tokenized) == 0:
        raise ConfigError(f"no usable {what} examples: every row lacks text, an answer or a prompt")
    logger.info("Tokenized %s example:\n%s", what, processor.describe(tokenized[0]))
    return tokenized


def _drop_media_cut(tokenized: Any, data_args: Any, what: str) -> Any:
    """Remove the examples whose media tokens cutoff_len would cut, or that keep no answer after them (the processor
    flags them in `_media_cut`; streamed ones it skips itself): a model cannot take part of an image, an example
    without its image tokens would no longer match its images, and one without an answer trains nothing."""
    if MEDIA_CUT not in tokenized.column_names:
        return tokenized
    cut = sum(tokenized[MEDIA_CUT])
    if not cut:
        return tokenized.remove_columns(MEDIA_CUT)
    if cut == len(tokenized):
        raise ConfigError(f"every {what} example is longer than cutoff_len ({data_args.cutoff_len}) inside its "
                          "image/video/audio tokens; raise cutoff_len or lower image_max_pixels")
    logger.warning("Dropped %d of %d %s examples: cutoff_len (%d) would cut inside their image/video/audio tokens "
                   "(or leave no answer after them); raise cutoff_len or lower image_max_pixels / video_maxlen to "
                   "keep them.",
                   cut, len(tokenized), what, data_args.cutoff_len)
    return tokenized.filter(lambda flags: [not f for f in flags], input_columns=MEDIA_CUT,
                            batched=True).remove_columns(MEDIA_CUT)


def _load(names: str | None, model_args: Any, data_args: Any, training_args: Any, stage: str,
          report: dict[str, Any] | None) -> list[tuple[str, Any]]:
    attrs = get_dataset_list(names, data_args.dataset_dir)
    return [(a.name, load_single_dataset(a, model_args, data_args, training_args.seed, stage, report)) for a in attrs]


def _split_off_eval(train: Any, data_args: Any, seed: int) -> tuple[Any, Any]:
    if data_args.streaming:
        if data_args.val_size < 1:
            raise ConfigError("with `streaming`, `val_size` must be a whole number of examples (>= 1)")
        size = int(data_args.val_size)
        return train.skip(size), train.take(size)
    size = int(data_args.val_size) if data_args.val_size >= 1 else data_args.val_size
    if isinstance(size, int) and size >= len(train):
        raise ConfigError(f"`val_size` {size} must be smaller than the {len(train)} training examples")
    try:
        split = train.train_test_split(test_size=size, seed=seed)
    except ValueError as err:
        raise ConfigError(f"`val_size` {data_args.val_size}: {' '.join(str(err).split())}") from err
    logger.info("Held out %d of %d examples for evaluation (val_size).", len(split["test"]), len(train))
    return split["train"], split["test"]


def _from_tokenized_path(path: str) -> dict[str, Any]:
    from datasets import DatasetDict, load_from_disk

    logger.warning("Loading the tokenized dataset from %s (tokenized_path); dataset options are not applied.", path)
    saved = load_from_disk(path)
    if not isinstance(saved, DatasetDict):
        return {"train_dataset": saved}
    module = {}
    if "train" in saved:
        module["train_dataset"] = saved["train"]
    evals = {k.split("validation_", 1)[1]: v for k, v in saved.items() if k.startswith("validation_")}
    if "validation" in saved:
        module["eval_dataset"] = saved["validation"]
    elif evals:
        module["eval_dataset"] = evals
    return module


def _save_tokenized(module: dict[str, Any], path: str) -> None:
    from datasets import DatasetDict

    parts = {}
    if "train_dataset" in module:
        parts["train"] = module["train_dataset"]
    evals = module.get("eval_dataset")
    if isinstance(evals, dict):
        parts.update({f"validation_{name}": ds for name, ds in evals.items()})
    elif evals is not None:
        parts["validation"] = evals
    DatasetDict(parts).save_to_disk(path)
    logger.info("Tokenized dataset saved at %s; later runs with `tokenized_path: %s` load it directly.", path, path)


def get_dataset(template: Any, model_args: Any, data_args: Any, training_args: Any, stage: str,
                tokenizer: Any, report: dict[str, Any] | None = None, processor: Any = None) -> dict[str, Any]:
    """`train_dataset` / `eval_dataset` ready for a Trainer (eval_dataset is a dict with eval_on_each_dataset).

    `processor` is the model's Hugging Face processor (multimodal models): with a multimodal template, rows keep
    `images`/`videos`/`audios` path columns and their placeholders are expanded into the model's media tokens."""
    path = data_args.tokenized_path
    if training_args.local_process_index != 0 and data_args.overwrite_cache:
        data_args = copy.copy(data_args)  # the main process has just rebuilt the cache: reuse it, never redo it
        data_args.overwrite_cache = False
    # Every process enters the block, even when tokenized_path exists: a process that skipped it would leave the
    # others waiting at its barrier. The main process goes first; the others then load what it left on disk.
    with training_args.main_process_first(desc="load and tokenize dataset", local=True):
        if path and os.path.isdir(path) and os.listdir(path):
            return _from_tokenized_path(path)
        module = _build(template, model_args, data_args, training_args, stage, tokenizer, report, processor)
        if path and not data_args.streaming and training_args.should_save:
            _save_tokenized(module, path)  # inside the block, so the other processes load it afterwards
    return module


def _build(template: Any, model_args: Any, data_args: Any, training_args: Any, stage: str, tokenizer: Any,
           report: dict[str, Any] | None, processor: Any = None) -> dict[str, Any]:
    """Load, merge, split and tokenize; called by one process first, then by the others from its cache."""
    seed = training_args.seed
    train = eval_ = None
    trains = _load(data_args.dataset, model_args, data_args, training_args, stage, report)
    evals = _load(data_args.eval_dataset, model_args, data_args, training_args, stage, report)
    if trains:
        train = _merge([d for _, d in trains], data_args, seed)
        if data_args.val_size > 0:
            train, eval_ = _split_off_eval(train, data_args, seed)
        if data_args.streaming:
            train = train.shuffle(buffer_size=data_args.buffer_size, seed=seed)
        train = _tokenize(train, stage, template, tokenizer, data_args, "training", processor)
    if evals:
        if data_args.eval_on_each_dataset:
            eval_ = {name: _tokenize(d, stage, template, tokenizer, data_args, f"evaluation ({name})", processor)
                     for name, d in evals}
        else:
            eval_ = _merge([d for _, d in evals], data_args, seed)
    if eval_ is not None and not isinstance(eval_, dict):
        eval_ = _tokenize(eval_, stage, template, tokenizer, data_args, "evaluation", processor)
    module: dict[str, Any] = {}
    if train is not None:
        module["train_dataset"] = train
    if eval_ is not None:
        module["eval_dataset"] = eval_
    return module
