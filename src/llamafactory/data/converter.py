"""Turn each dataset format into one aligned schema, so processors never care where data came from.

Aligned columns:
- `_prompt`: messages up to and including the last user-side turn (user or observation);
- `_response`: the answer (one message), the [chosen, rejected] pair for ranking data, or [] when absent;
- `_system`, `_tools`: strings (`_tools` is a JSON list of function schemas);
- `_kto_tag`: True/False for feedback data, else None;
- `_drop`: why the row breaks its format ("" when it is fine). The loader drops such rows and reports
  how many, why and where, per dataset;
- `_images`, `_videos`, `_audios` (only for datasets that can carry media, see `DatasetAttr.may_have_media`):
  absolute paths of local files, one per `<image>` / `<video>` / `<audio>` placeholder, in order. A video given
  as a list of frame images is stored as one JSON list of frame paths (see `video_entry`). Media columns typed as
  datasets Image/Audio/Video features (hub and parquet data) are read undecoded and their bytes stored as files;
- `_origin` (media datasets only): the row's dataset, file and number, so errors raised while tokenizing the row
  (an unreadable image, a kind of media the model does not take) still say where it is.
"""

import base64
import binascii
import hashlib
import json
import mimetypes
import os
from dataclasses import dataclass
from typing import Any

from ..extras.envs import media_placeholders
from ..extras.errors import ConfigError
from .parser import MEDIA_KEYS, DatasetAttr
from .template import ASSISTANT, FUNCTION, OBSERVATION, SYSTEM, USER

ALIGNED_COLUMNS = ("_prompt", "_response", "_system", "_tools", "_kto_tag")
MEDIA_COLUMNS = ("_images", "_videos", "_audios")  # aligned with MEDIA_KEYS
MEDIA_ORIGIN = "_origin"  # "dataset `name` (path), row N", for errors raised later while tokenizing the row
USER_SIDE = (USER, OBSERVATION)
ASSISTANT_SIDE = (ASSISTANT, FUNCTION)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _tools_text(value: Any) -> str:
    """Tools as a JSON list of function schemas, whether given as a string, a list or OpenAI's wrappers."""
    if value in (None, "", []):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value  # the tool formatter reports unreadable schemas when it renders them
    if isinstance(value, dict):
        value = [value]
    functions = [t["function"] if isinstance(t, dict) and t.get("type") == "function" and "function" in t else t
                 for t in value]
    return json.dumps(functions, ensure_ascii=False)


class _Row:
    """Column access for one row, with errors that name the dataset, row and column."""

    def __init__(self, example: dict[str, Any], attr: DatasetAttr, row: int) -> None:
        self.example, self.attr, self.row = example, attr, row

    def get(self, key: str) -> Any:
        column = self.attr.column(key)
        if not column:
            return None
        if column not in self.example:
            raise ConfigError(f"dataset `{self.attr.name}` ({self.attr.path}), row {self.row}: column `{column}` "
                              f"(the `{key}` column) is missing; columns present: {', '.join(sorted(self.example))}")
        return self.example[column]

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"dataset `{self.attr.name}` ({self.attr.path}), row {self.row}: {message}")


def _result(prompt: list, response: list, system: Any, tools: Any, kto_tag: Any, drop: str) -> dict[str, Any]:
    return {"_prompt": prompt, "_response": response, "_system": _text(system), "_tools": _tools_text(tools),
            "_kto_tag": None if kto_tag is None else bool(kto_tag), "_drop": drop}


def _check_turns(prompt: list[dict[str, str]], response: list[dict[str, str]], ranking: bool) -> str:
    """The reason a conversation breaks the format, or ""."""
    if not prompt:
        return "no prompt"
    for i, message in enumerate(prompt):
        expected = USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE
        if message["role"] not in expected:
            return "wrong role order"
    if len(prompt) % 2 == 0:
        return "odd number of turns"
    if not prompt[-1]["content"].strip():
        return "empty prompt"
    if ranking:
        if len(response) != 2 or any(m["role"] not in ASSISTANT_SIDE for m in response):
            return "chosen/rejected missing or not assistant turns"
        if any(not m["content"].strip() for m in response):
            return "empty chosen or rejected response"
    elif response and not response[0]["content"].strip():
        return "empty response"
    return ""


def convert_alpaca(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    r = _Row(example, attr, row)
    prompt = []
    history = r.get("history") or []
    if not isinstance(history, list):
        raise r.fail("`history` must be a list of [query, response] pairs")
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise r.fail(f"each `history` item must be a [query, response] pair, got {turn!r}")
        prompt.append({"role": USER, "content": _text(turn[0])})
        prompt.append({"role": ASSISTANT, "content": _text(turn[1])})
    query = [_text(r.get("prompt")), _text(r.get("query"))]
    prompt.append({"role": USER, "content": "\n".join(part for part in query if part)})
    if attr.ranking:
        chosen, rejected = r.get("chosen"), r.get("rejected")
        response = [{"role": ASSISTANT, "content": _text(chosen)}, {"role": ASSISTANT, "content": _text(rejected)}]
    else:
        output = r.get("response")
        response = [] if output is None else [{"role": ASSISTANT, "content": _text(output)}]
    return _result(prompt, response, r.get("system"), r.get("tools"), r.get("kto_tag"),
                   _check_turns(prompt, response, attr.ranking))


SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


def _role_map(tags: dict[str, str]) -> dict[str, str]:
    return {tags["user_tag"]: USER, tags["assistant_tag"]: ASSISTANT, tags["observation_tag"]: OBSERVATION,
            tags["function_tag"]: FUNCTION, tags["system_tag"]: SYSTEM}


def _message(raw: Any, tags: dict[str, str], roles: dict[str, str], r: _Row) -> dict[str, str] | None:
    if not isinstance(raw, dict) or tags["role_tag"] not in raw:
        raise r.fail(f"each message must be an object with a `{tags['role_tag']}` key, got {raw!r:.80}")
    role = roles.get(raw[tags["role_tag"]])
    if role is None:
        return None
    return {"role": role, "content": _text(raw.get(tags["content_tag"]))}


def convert_sharegpt(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    r = _Row(example, attr, row)
    tags = {**(OPENAI_TAGS if attr.formatting == "openai" else SHAREGPT_TAGS), **attr.tags}
    roles = _role_map(tags)
    raw_messages = r.get("messages") or []
    if not isinstance(raw_messages, list):
        raise r.fail("the messages column must be a list of messages")
    messages = []
    for raw in raw_messages:
        message = _message(raw, tags, roles, r)
        if message is None:
            return _result([], [], "", "", None, f"unknown role `{raw.get(tags['role_tag'])}`")
        messages.append(message)
    system = r.get("system")
    if messages and messages[0]["role"] == SYSTEM:
        system = messages.pop(0)["content"]
    if any(m["role"] == SYSTEM for m in messages):
        return _result([], [], "", "", None, "system message after the first turn")
    if attr.ranking:
        prompt = messages
        pair = [_message(r.get("chosen"), tags, roles, r), _message(r.get("rejected"), tags, roles, r)]
        response = [m for m in pair if m is not None]
    elif len(messages) % 2 == 1:
        return _result([], [], "", "", None, "odd number of turns")
    else:
        prompt, response = messages[:-1], messages[-1:]
    return _result(prompt, response, system, r.get("tools"), r.get("kto_tag"),
                   _check_turns(prompt, response, attr.ranking))


def _openai_calls(message: dict[str, Any]) -> str:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # kept as text; the tool formatter renders it as given
        calls.append({"name": function.get("name", ""), "arguments": arguments})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def convert_openai(example: dict[str, Any], attr: DatasetAttr, row: int) -> dict[str, Any]:
    """OpenAI chat messages: assistant `tool_calls` become function turns, `tool` messages observations, and
    image/audio/video content parts placeholders (their sources land in `_images`/`_audios`/`_videos`)."""
    r = _Row(example, attr, row)
    raw_messages = r.get("messages") or []
    if not isinstance(raw_messages, list):
        raise r.fail("the messages column must be a list of messages")
    rewritten: list[dict[str, Any]] = []
    part_media: dict[str, list[Any]] = {key: [] for key in MEDIA_KEYS}
    for raw in raw_messages:
        if not isinstance(raw, dict):
            raise r.fail(f"each message must be an object, got {raw!r:.80}")
        content = raw.get("content")
        if isinstance(content, list):
            text, media = _content_parts(content, r)
            raw = {**raw, "content": text}
            for key, items in media.items():
                part_media[key] += items
        if raw.get("role") == "assistant" and raw.get("tool_calls"):
            if _text(raw.get("content")).strip():
                return _result([], [], "", "", None, "assistant message with both content and tool_calls")
            raw = {"role": "function_call", "content": _openai_calls(raw)}
        if raw.get("role") == "tool" and rewritten and rewritten[-1].get("role") == "tool":
            rewritten[-1] = {"role": "tool", "content": rewritten[-1]["content"] + "\n" + _text(raw.get("content"))}
            continue  # results of parallel calls form one observation turn
        rewritten.append(raw)
    column = attr.column("messages")
    out = convert_sharegpt({**example, column: rewritten}, attr, row)
    for key, aligned in zip(MEDIA_KEYS, MEDIA_COLUMNS):
        if part_media[key]:
            out[aligned] = part_media[key]  # resolved and checked against the placeholders in align_dataset
    return out


# ------------------------------------------------------------------------------------------------ media
# OpenAI content part type -> media key; the part's value is a url string or {"url": ...}.
PART_KINDS = {"image_url": "images", "image": "images", "video_url": "videos", "video": "videos",
              "input_audio": "audios", "audio_url": "audios", "audio": "audios"}
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus")


def video_entry(entry: str) -> str | list[str]:
    """A stored `_videos` entry as the plugins take it: a file path, or the list of a video's frame paths."""
    return json.loads(entry) if entry.startswith("[") else entry


def _content_parts(parts: list[Any], r: _Row) -> tuple[str, dict[str, list[Any]]]:
    """The text of OpenAI content parts, with a placeholder where each media part stood, and the media sources."""
    marks = media_placeholders()
    texts: list[str] = []
    media: dict[str, list[Any]] = {key: [] for key in MEDIA_KEYS}
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type", "text")
        if kind == "text":
            texts.append(_text(part.get("text")))
            continue
        key = PART_KINDS.get(kind)
        if key is None:
            if isinstance(part.get("text"), str):  # input_text, output_text, ...: text by another name
                texts.append(part["text"])
                continue
            raise r.fail(f"unknown content part type `{kind}` (and no `text` in it); known: text, "
                         f"{', '.join(PART_KINDS)}")
        value = part.get(kind)
        if kind == "input_audio" and isinstance(value, dict):
            value = _input_audio(value)
        elif isinstance(value, dict):
            value = value.get("url")
        if not value:
            raise r.fail(f"`{kind}` content part without a url or data")
        media[key].append(value)
        texts.append(marks[key])
    return "".join(texts), media


def _input_audio(value: dict[str, Any]) -> str:
    """OpenAI's `input_audio` ({"data": base64, "format": "wav"}) as a data URL; a path or URL is kept as is."""
    data = _text(value.get("data"))
    if data.startswith(("data:", "http://", "https://")) or data.lower().endswith(AUDIO_EXTENSIONS):
        return data
    return f"data:audio/{value.get('format') or 'wav'};base64,{data}" if data else ""


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _wav_bytes(array: Any, rate: Any, r: "_Row") -> bytes:
    """A decoded audio array as 32-bit PCM .wav (read back with the standard library, no soundfile needed)."""
    import io
    import wave

    import numpy as np

    if not rate:
        raise r.fail("an audio given as an array needs its `sampling_rate`")
    samples = np.asarray(array, dtype=np.float64)
    if samples.ndim > 1:  # (channels, samples) or (samples, channels): mono, as the models take it
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    pcm = (np.clip(samples, -1.0, 1.0) * (2**31 - 1)).astype("<i4")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(4)
        f.setframerate(int(rate))
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


# Leading bytes of common media files: stored bytes without a file name still get the extension readers go by.
MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"fLaC", ".flac"),
         (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\x1aE\xdf\xa3", ".webm"))


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] in (b"WAVE", b"WEBP"):
        return ".wav" if data[8:12] == b"WAVE" else ".webp"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return next((extension for magic, extension in MAGIC if data.startswith(magic)), ".bin")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class MediaSource:
    """Where media paths point: relative ones under `media_dir`. http(s) URLs are downloaded, and data URLs or
    embedded bytes written, once into `cache_dir`, so everything later reads plain local files."""

    media_dir: str
    allow_urls: bool = False
    cache_dir: str = ""

    def resolve(self, value: Any, key: str, r: _Row) -> str:
        what = key[:-1]  # "image", "video", "audio"
        if key == "videos" and isinstance(value, (list, tuple)):  # a video given as its frame images
            if not value:
                raise r.fail("a video given as a list of frames has no frames")
            return json.dumps([self.resolve(frame, "images", r) for frame in value])
        if isinstance(value, dict) and value.get("array") is not None:  # a decoded Audio feature
            return self._store(_wav_bytes(value["array"], value.get("sampling_rate"), r), ".wav")
        if isinstance(value, dict):  # datasets' undecoded Image/Audio/Video features: {"bytes": ..., "path": ...}
            if value.get("bytes"):
                data = bytes(value["bytes"])
                return self._store(data, os.path.splitext(value.get("path") or "")[1][:8] or _sniff(data))
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return self._store(bytes(value), _sniff(bytes(value)))
        if _is_pil(value):  # a decoded Image feature: stored as PNG, so later steps read a file like any other
            return self._store(_png_bytes(value), ".png")
        if not isinstance(value, str) or not value.strip():
            raise r.fail(f"each {what} must be a path, a URL, a data URL or a datasets Image/Audio/Video value, "
                         f"got {value!r:.80}")
        if value.startswith("data:"):
            return self._decode(value, what, r)
        if value.startswith(("http://", "https://")):
            if not self.allow_urls:
                raise r.fail(f"{what} `{value}` is a URL; set `media_allow_urls: true` to download media from URLs")
            return self._download(value, what, r)
        path = os.path.abspath(os.path.join(self.media_dir, os.path.expanduser(value)))
        if not os.path.isfile(path):
            raise r.fail(f"{what} file `{path}` not found (relative paths are resolved against media_dir "
                         f"`{self.media_dir}`)")
        return path

    def _store(self, data: bytes, extension: str) -> str:
        folder = os.path.join(self.cache_dir, "media")
        path = os.path.join(folder, hashlib.sha1(data).hexdigest() + extension)
        if not os.path.isfile(path):
            os.makedirs(folder, exist_ok=True)
            partial = f"{path}.{os.getpid()}.part"
            with open(partial, "wb") as f:
                f.write(data)
            os.replace(partial, path)  # other workers see the whole file or none
        return path

    def _decode(self, value: str, what: str, r: _Row) -> str:
        header, _, payload = value.partition(",")
        if not header.endswith(";base64") or not payload:
            raise r.fail(f"{what} data URL must be `data:<type>;base64,<data>`, got {value!r:.60}")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise r.fail(f"{what} data URL holds invalid base64: {err}") from err
        mime = header[len("data:"):-len(";base64")]
        return self._store(data, mimetypes.guess_extension(mime) or ".bin")

    def _download(self, url: str, what: str, r: _Row) -> str:
        from urllib.parse import urlparse
        from urllib.request import urlopen

        extension = os.path.splitext(urlparse(url).path)[1][:8]
        path = os.path.join(self.cache_dir, "media", hashlib.sha1(url.encode()).hexdigest() + extension)
        if os.path.isfile(path):
            return path  # downloaded by an earlier run
        try:
            with urlopen(url, timeout=60) as response:  # noqa: S310 - the user enabled URLs; schemes checked above
                data = response.read()
        except OSError as err:
            raise r.fail(f"cannot download {what} `{url}`: {err}") from err
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.part"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
        return path


def attach_media(out: dict[str, Any], example: dict[str, Any], attr: DatasetAttr, row: int, source: MediaSource,
                 marks: dict[str, str]) -> dict[str, Any]:
    """Add the resolved `_images`/`_videos`/`_audios` of one converted row, checked against its placeholders."""
    r = _Row(example, attr, row)
    messages = out["_prompt"] + out["_response"][:1]  # ranking data: the chosen answer stands for both
    for key, aligned in zip(MEDIA_KEYS, MEDIA_COLUMNS):
        given, parts = _as_list(r.get(key)), out.get(aligned) or []
        if given and parts:
            raise r.fail(f"{key} come both from the `{attr.column(key)}` column and from content parts; use one")
        items = given or parts
        if out["_drop"]:
            out[aligned] = []  # the row is dropped anyway (and reported); its media need not exist
            continue
        found = sum(m["content"].count(marks[key]) for m in messages)
        if found != len(items):
            raise r.fail(f"{found} `{marks[key]}` placeholder(s) in the messages but {len(items)} {key}: each "
                         f"{key[:-1]} needs exactly one `{marks[key]}` where it belongs in the text")
        out[aligned] = [source.resolve(item, key, r) for item in items]
    return out


CONVERTERS = {"alpaca": convert_alpaca, "sharegpt": convert_sharegpt, "openai": convert_openai}


def align_dataset(dataset: Any, attr: DatasetAttr, num_proc: int | None, overwrite_cache: bool,
                  needs_response: bool = True, media: MediaSource | None = None) -> Any:
    """Convert every row; with `needs_response` (training stages), a row without an answer is marked too.

    Datasets that can carry media (`attr.may_have_media`) also get `_images`/`_videos`/`_audios`, resolved with
    `media` (default: relative to the dataset's folder); other datasets keep exactly the text columns."""
    convert = CONVERTERS[attr.formatting]
    if attr.may_have_media and media is None:
        media = MediaSource(os.path.dirname(attr.path))
    source = media if attr.may_have_media else None
    marks = media_placeholders()  # captured here, so a changed placeholder changes the cache fingerprint

    def align(example: dict[str, Any], idx: int) -> dict[str, Any]:
        out = convert(example, attr, idx)
        if needs_response and not out["_drop"] and not out["_response"]:
            out["_drop"] = "no response"
        if source is not None:
            attach_media(out, example, attr, idx, source, marks)
            out[MEDIA_ORIGIN] = f"dataset `{attr.name}` ({attr.path}), row {idx}"
        return out

    from datasets import IterableDataset

    if source is not None:
        dataset = undecoded_media(dataset, attr)

    kwargs = {} if isinstance(dataset, IterableDataset) else dict(
        num_proc=num_proc, load_from_cache_file=not overwrite_cache, desc=f"Converting format of dataset {attr.name}")
    aligned = dataset.map(
        align,
        with_indices=True,
        remove_columns=dataset.column_names,
        **kwargs,
    )
    if source is None or isinstance(dataset, IterableDataset):  # a stream's rows already hold every column
        return aligned
    return with_media_columns(aligned)


def with_media_columns(dataset: Any) -> Any:
    """`dataset` with `_images`/`_videos`/`_audios` typed as lists of strings (added empty where missing), so
    media and text-only datasets concatenate: a column of only empty lists would otherwise have no item type.
    `_origin` (added "" where missing) names each row's dataset and row for errors raised while tokenizing it."""
    from datasets import IterableDataset, List, Value

    if isinstance(dataset, IterableDataset):  # columns are unknown until read: fill them row by row
        return dataset.map(lambda example: {**{c: example.get(c) or [] for c in MEDIA_COLUMNS},
                                            MEDIA_ORIGIN: example.get(MEDIA_ORIGIN) or ""})
    for column in MEDIA_COLUMNS:
        if column not in dataset.column_names:
            dataset = dataset.add_column(column, [[] for _ in range(len(dataset))])
        if dataset.features[column] != List(Value("string")):
            dataset = dataset.cast_column(column, List(Value("string")))
    if MEDIA_ORIGIN not in dataset.column_names:
        dataset = dataset.add_column(MEDIA_ORIGIN, [""] * len(dataset))
    return dataset


def _undecoded_feature(feature: Any) -> Any:
    """`feature` with every Image/Audio/Video inside it left undecoded ({"bytes", "path"} instead of PIL images
    or decoder objects)."""
    import dataclasses

    from datasets import Audio, Image, LargeList, List, Video

    if isinstance(feature, (Image, Audio, Video)):
        return dataclasses.replace(feature, decode=False) if feature.decode else feature
    if isinstance(feature, (List, LargeList)):
        return dataclasses.replace(feature, feature=_undecoded_feature(feature.feature))
    if isinstance(feature, dict):
        return {key: _undecoded_feature(value) for key, value in feature.items()}
    if isinstance(feature, list) and len(feature) == 1:  # the legacy [feature] spelling of a list
        return [_undecoded_feature(feature[0])]
    return feature


def undecoded_media(dataset: Any, attr: DatasetAttr) -> Any:
    """Media columns typed as datasets Image/Audio/Video features (hub and parquet datasets) are read undecoded,
    so `MediaSource.resolve` stores their bytes once as files and every later step reads local files."""
    features = getattr(dataset, "features", None) or {}
    for key in MEDIA_KEYS:
        column = attr.column(key)
        if column and column in features:
            undecoded = _undecoded_feature(features[column])
            if undecoded != features[column]:
                dataset = dataset.cast_column(column, undecoded)
    return dataset
