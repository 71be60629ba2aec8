"""What the page reads from disk: trained runs under saves/, datasets in dataset_info.json, rows to preview.

Layout of saves/ (the page writes it; any folder that follows it shows up in the checkpoint picker):

    saves/<model>/<finetuning_type>/<prefix>_<YYYY-MM-DD-HH-MM-SS>/     prefix: train, eval or export
        training_args.yaml (or eval_args.yaml, export_args.yaml)       what the run was started with
        running_log.txt                                                everything the command printed
        trainer_log.jsonl, checkpoint-*/, adapter or model files       what `lmf train` writes

`<model>` is the model's registered name, or the last part of a custom path.
"""

import csv
import json
import os
from typing import Any

from . import models
from .args import SAVES

ADAPTER_FILE = "adapter_config.json"
DATA_CONFIG = "dataset_info.json"


def _holds_weights(folder: str, finetuning_type: str) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    if finetuning_type in ("lora", "oft"):
        return ADAPTER_FILE in names
    return "config.json" in names and any(n.endswith((".safetensors", ".bin")) for n in names)


def list_checkpoints(model_name: str, model_path: str, finetuning_type: str,
                     root: str = SAVES) -> list[tuple[str, str]]:
    """(label, path) of every trained run of this model and method, newest first, each followed by its
    intermediate `checkpoint-*` folders (a stopped run has only those)."""
    base = os.path.join(root, models.folder_name(model_name, model_path), finetuning_type)
    if not os.path.isdir(base):
        return []
    found: list[tuple[str, str]] = []
    for run in sorted(os.listdir(base), reverse=True):
        folder = os.path.join(base, run)
        if not os.path.isdir(folder):
            continue
        if _holds_weights(folder, finetuning_type):
            found.append((run, folder))
        steps = [n for n in os.listdir(folder) if n.startswith("checkpoint-") and n[11:].isdigit()]
        for name in sorted(steps, key=lambda n: int(n[11:]), reverse=True):
            if _holds_weights(os.path.join(folder, name), finetuning_type):
                found.append((f"{run}/{name}", os.path.join(folder, name)))
    return found


def read_dataset_info(dataset_dir: str) -> dict[str, Any]:
    path = os.path.join(dataset_dir or ".", DATA_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def list_datasets(dataset_dir: str, stage: str) -> list[str]:
    """Names registered in dataset_dir that suit the stage: ranking data for rm and dpo, the rest otherwise."""
    ranking = stage in ("rm", "dpo")
    return [name for name, entry in read_dataset_info(dataset_dir).items()
            if isinstance(entry, dict) and bool(entry.get("ranking", False)) == ranking]


def _rows_of_file(path: str, limit: int) -> tuple[int, list[Any]]:
    if path.endswith(".jsonl"):
        rows = []
        total = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    if total < limit:
                        rows.append(json.loads(line))
                    total += 1
        return total, rows
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data = data if isinstance(data, list) else [data]
        return len(data), data[:limit]
    if path.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            data = list(csv.DictReader(f))
        return len(data), data[:limit]
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            data = [{"text": line.rstrip("\n")} for line in f if line.strip()]
        return len(data), data[:limit]
    raise ValueError(os.path.splitext(path)[1] or path)


def preview_dataset(dataset_dir: str, name: str, limit: int = 5) -> tuple[int, list[Any], str]:
    """(rows in the file, the first `limit` rows, a note) for a registered local dataset; hub data is not read."""
    entry = read_dataset_info(dataset_dir).get(name)
    if not isinstance(entry, dict):
        return 0, [], f"`{name}` is not in {os.path.join(dataset_dir, DATA_CONFIG)}"
    if "file_name" not in entry:
        source = entry.get("hf_hub_url") or entry.get("ms_hub_url") or entry.get("cloud_file_name") or "remote"
        return 0, [], f"`{name}` is loaded from {source}; only local files are previewed"
    path = os.path.join(dataset_dir, entry["file_name"])
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if not n.startswith("."))
        if not files:
            return 0, [], f"folder {path} is empty"
        path = files[0]
    try:
        total, rows = _rows_of_file(path, limit)
    except FileNotFoundError:
        return 0, [], f"file {path} not found"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return 0, [], f"cannot read {path}: {err}"
    except ValueError as err:
        return 0, [], f"no preview for {err} files"
    return total, rows, path
