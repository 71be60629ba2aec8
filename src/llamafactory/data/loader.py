"""Load the named datasets, align their formats, tokenize them and split off evaluation data."""

import os
from typing import Any

import numpy as np

from ..extras.errors import ConfigError
from ..extras.logging import get_logger
from .converter import align_dataset
from .parser import DatasetAttr, get_dataset_list
from .processor import get_processor

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


def load_single_dataset(attr: DatasetAttr, model_args: Any, data_args: Any, seed: int = 42) -> Any:
    from datasets import load_dataset

    builder, files = _data_files(attr)
    logger.info("Loading dataset %s from %s...", attr.name, attr.path)
    try:
        dataset = load_dataset(builder, data_files=files, split=attr.split, cache_dir=model_args.cache_dir)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs the file name
        message = " ".join(str(err).split())[:400]
        raise ConfigError(f"dataset `{attr.name}`: cannot read {attr.path} as {builder}: {message}") from err
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
    return align_dataset(dataset, attr, data_args.preprocessing_num_workers, data_args.overwrite_cache)


def _merge(datasets: list[Any]) -> Any:
    from datasets import concatenate_datasets

    return datasets[0] if len(datasets) == 1 else concatenate_datasets(datasets)


def _tokenize(dataset: Any, stage: str, template: Any, tokenizer: Any, data_args: Any, what: str) -> Any:
    processor = get_processor(stage, template, tokenizer, data_args)
    if stage == "pt":  # blocks do not map to rows, so empty rows are counted before tokenizing
        nonempty = dataset.filter(lambda ex: processor.is_valid(ex["_prompt"], ex["_response"]),
                                  num_proc=data_args.preprocessing_num_workers, desc=f"Checking {what} texts")
        if len(nonempty) < len(dataset):
            logger.warning("Dropped %d of %d %s examples with empty text.", len(dataset) - len(nonempty),
                           len(dataset), what)
        dataset = nonempty
    before = len(dataset)
    tokenized = dataset.map(
        processor.preprocess,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        remove_columns=dataset.column_names,
        num_proc=data_args.preprocessing_num_workers,
        load_from_cache_file=not data_args.overwrite_cache,
        desc=f"Running tokenizer on {what} dataset",
    )
    if stage == "sft":
        dropped = before - len(tokenized)
        if dropped:
            logger.warning("Dropped %d of %d %s examples with no answer or an empty prompt.", dropped, before, what)
    if len(tokenized) == 0:
        raise ConfigError(f"no usable {what} examples: every row lacks text, an answer or a prompt")
    logger.info("Tokenized %s example:\n%s", what, processor.describe(tokenized[0]))
    return tokenized


def get_dataset(template: Any, model_args: Any, data_args: Any, training_args: Any, stage: str,
                tokenizer: Any) -> dict[str, Any]:
    """`train_dataset` / `eval_dataset` ready for a Trainer."""
    with training_args.main_process_first(desc="load and tokenize dataset", local=True):
        train = eval_ = None
        train_attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
        eval_attrs = get_dataset_list(data_args.eval_dataset, data_args.dataset_dir)
        if train_attrs:
            train = _tokenize(_merge([load_single_dataset(a, model_args, data_args, training_args.seed)
                                      for a in train_attrs]),
                              stage, template, tokenizer, data_args, "training")
        if eval_attrs:
            eval_ = _tokenize(_merge([load_single_dataset(a, model_args, data_args, training_args.seed)
                                      for a in eval_attrs]),
                              stage, template, tokenizer, data_args, "evaluation")
        if train is not None and data_args.val_size > 0 and eval_ is None:
            size = int(data_args.val_size) if data_args.val_size >= 1 else data_args.val_size
            if isinstance(size, int) and size >= len(train):
                raise ConfigError(f"`val_size` {size} must be smaller than the {len(train)} training examples")
            try:
                split = train.train_test_split(test_size=size, seed=training_args.seed)
            except ValueError as err:
                raise ConfigError(f"`val_size` {data_args.val_size}: {' '.join(str(err).split())}") from err
            train, eval_ = split["train"], split["test"]
            logger.info("Held out %d of %d examples for evaluation (val_size).", len(eval_), len(train) + len(eval_))
    module: dict[str, Any] = {}
    if train is not None:
        module["train_dataset"] = train
    if eval_ is not None:
        module["eval_dataset"] = eval_
    return module
