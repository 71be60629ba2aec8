"""dataset_info.json: what each named dataset is, where it lives and which columns mean what."""

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..extras import envs
from ..extras.constants import DATA_CONFIG
from ..extras.errors import ConfigError

FORMATS = ("alpaca", "sharegpt", "openai")
COLUMN_DEFAULTS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "openai": {"messages": "messages"},
}
# Columns that hold media paths (a list of paths, or one path, per row); see converter.py.
MEDIA_KEYS = ("images", "videos", "audios")
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
               "audios", "chosen", "rejected", "kto_tag")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag",
            "system_tag")
ENTRY_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name",
              "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags", "file_sha1")


@dataclass
class DatasetAttr:
    """One entry of dataset_info.json, resolved."""

    name: str
    load_from: str  # file, hf_hub, ms_hub, om_hub, script or cloud_file
    path: str  # the file or folder, joined with dataset_dir
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def column(self, key: str) -> str | None:
        return self.columns.get(key)

    @property
    def may_have_media(self) -> bool:
        """Rows can carry media: a media column is named, or OpenAI content parts may hold images/audio/video."""
        return self.formatting == "openai" or any(self.columns.get(key) for key in MEDIA_KEYS)


def _read_dataset_info(dataset_dir: str) -> dict[str, Any]:
    path = os.path.join(dataset_dir, DATA_CONFIG)
    if not os.path.isfile(path):
        raise ConfigError(f"`{path}` not found: `dataset_dir` must be a folder with a {DATA_CONFIG}")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}") from err
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: expected a mapping of dataset names to entries")
    return info


def get_dataset_list(names: str | None, dataset_dir: str) -> list[DatasetAttr]:
    if not names:
        return []
    info = _read_dataset_info(dataset_dir)
    info_path = os.path.join(dataset_dir, DATA_CONFIG)
    attrs = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in info:
            raise ConfigError(f"dataset `{name}` is not defined in {info_path}; defined: {', '.join(sorted(info))}")
        attrs.append(_parse_entry(name, info[name], dataset_dir, info_path))
    return attrs


def _source(entry: dict[str, Any], dataset_dir: str, where: str) -> tuple[str, str]:
    """Where the data comes from, with LlamaFactory's precedence: hubs, then a script, a cloud file, a file."""
    hf, ms, om = entry.get("hf_hub_url"), entry.get("ms_hub_url"), entry.get("om_hub_url")
    if hf or ms or om:
        if ms and (envs.use_modelscope() or not hf):
            return "ms_hub", ms
        if om and not hf:
            return "om_hub", om
        return "hf_hub", hf
    if entry.get("script_url"):
        return "script", os.path.join(dataset_dir, entry["script_url"])
    if entry.get("cloud_file_name"):
        return "cloud_file", entry["cloud_file_name"]
    if entry.get("file_name"):
        return "file", os.path.join(dataset_dir, entry["file_name"])
    raise ConfigError(f"{where}: needs `file_name` (a file or folder inside {dataset_dir}) or a hub url")


def _parse_entry(name: str, entry: Any, dataset_dir: str, info_path: str) -> DatasetAttr:
    where = f"{info_path}, dataset `{name}`"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with `file_name` or a hub url")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key `{unknown[0]}`; valid keys: {', '.join(ENTRY_KEYS)}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATS:
        raise ConfigError(f"{where}: `formatting` must be one of {', '.join(FORMATS)}, got {formatting!r}")
    load_from, path = _source(entry, dataset_dir, where)
    # As in LlamaFactory: an entry that lists `columns` names every column it uses; the format's default
    # column names apply only when `columns` is absent.
    given = entry.get("columns")
    if given is None:
        columns = dict(COLUMN_DEFAULTS[formatting])
    elif not isinstance(given, dict):
        raise ConfigError(f"{where}: `columns` must be a mapping")
    else:
        columns = {}
        for key, value in given.items():
            if key not in COLUMN_KEYS:
                raise ConfigError(f"{where}: unknown column key `{key}`; valid: {', '.join(COLUMN_KEYS)}")
            columns[key] = value
    tags = entry.get("tags") or {}
    for key in tags:
        if key not in TAG_KEYS:
            raise ConfigError(f"{where}: unknown tag key `{key}`; valid: {', '.join(TAG_KEYS)}")
    num_samples = entry.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
        raise ConfigError(f"{where}: `num_samples` must be a positive integer, got {num_samples!r}")
    return DatasetAttr(
        name=name,
        load_from=load_from,
        path=path,
        formatting=formatting,
        ranking=bool(entry.get("ranking", False)),
        subset=entry.get("subset"),
        split=entry.get("split", "train"),
        folder=entry.get("folder"),
        num_samples=num_samples,
        columns=columns,
        tags=dict(tags),
    )
