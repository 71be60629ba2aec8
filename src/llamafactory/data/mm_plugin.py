"""Multimodal plugins: how each model family turns media placeholders into its own tokens and tensors.

Data carry `<image>`, `<video>` and `<audio>` placeholders in message text (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER,
AUDIO_PLACEHOLDER override them) and, per example, a list of media of each kind, in placeholder order. A template
names its plugin (`Template.mm_plugin`); `get_mm_plugin(name)` returns it. The rest of the code uses five calls:

    plugin.check(messages, images, videos, audios) -> None
        ValueError with a plain message when placeholders and media disagree, or the model takes no such media.
    plugin.expand_messages(messages, images, videos, audios, processor) -> messages
        Each placeholder replaced by the exact text (model tokens) the family's HF processor would put there, so
        the encoded prompt already holds as many media tokens as the model's vision/audio tower produces features.
    plugin.expand_ids(input_ids, labels, images, videos, audios, tokenizer, processor) -> (input_ids, labels)
        Tokens that live outside the text (PaliGemma's image prefix, before <bos>); identity for other families.
    plugin.mm_inputs(images, videos, audios, processor, counts=None, input_ids=None, labels=None) -> tensors
        What the model's forward takes for a batch: pixel_values, image_grid_thw, pixel_values_videos,
        video_grid_thw, image_sizes, aspect_ratio_ids/aspect_ratio_mask, input_features/feature_attention_mask.
        Media lists are the batch's media, flat, in example order; `counts` gives each example's
        (images, videos, audios) numbers (Mllama stacks images per example). With the padded batch `input_ids`
        (and `labels`) it also returns the tensors that depend on token positions: `mm_token_type_ids` (Qwen-VL
        M-RoPE), `token_type_ids` (Gemma3, PaliGemma) and `cross_attention_mask` (Mllama).
    plugin.media_token_ids(tokenizer) -> set[int]
        Ids of media tokens and their delimiters: labels must mask them and truncation must not cut a run.

Media may be paths, PIL images, raw bytes, `{"path": ...}` / `{"bytes": ...}` dicts; audio also numpy arrays (or
`{"array", "sampling_rate"}`); a video is a list of frames (any image form) or a video file. Processing settings
are read from attributes the model loader sets on the processor (`image_max_pixels`, `image_min_pixels`,
`image_do_pan_and_scan`, `video_max_pixels`, `video_min_pixels`, `video_fps`, `video_maxlen`,
`audio_sampling_rate`), with LlamaFactory's defaults when unset.

Videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) never go through transformers' video processors, which need torchvision:
each frame goes through the image processor and consecutive frames are merged into temporal patches, the layout
(grid_t, grid_h, grid_w) x (channels, temporal_patch, patch, patch) the vision tower reads (the same array the video
processor builds; frame sizes follow `video_max_pixels` / `video_min_pixels` and the image processor's limits, not
the video processor's own). Decoding a video file needs PyAV (`pip install av`); frame lists need nothing more.
Frames are sampled at `video_fps` (at most `video_maxlen`, at an even stride) before any is converted to an image;
Qwen2.5-VL's `second_per_grid_ts` follows the rate the kept frames are spaced at, Qwen3-VL's timestamps the kept
frames' seconds in the source.

Unreadable media (a missing or corrupt file, a PIL decompression bomb, a missing optional decoder: PyAV for
videos, soundfile for audio other than PCM .wav) raise ValueError naming the source, which data loading turns into
an error naming the row and the API into a 400 answer.
"""

import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from ..extras.constants import IGNORE_INDEX
from ..extras.envs import media_placeholders

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image

Messages = list[dict[str, str]]
KINDS = ("images", "videos", "audios")
# Processor attributes the loader sets (ModelArguments of the same names), with LlamaFactory's defaults.
DEFAULTS: dict[str, Any] = {
    "image_max_pixels": 768 * 768, "image_min_pixels": 32 * 32, "image_do_pan_and_scan": False,
    "video_max_pixels": 256 * 256, "video_min_pixels": 16 * 16, "video_fps": 2.0, "video_maxlen": 128,
    "audio_sampling_rate": 16000,
}


def setting(processor: Any, name: str) -> Any:
    value = getattr(processor, name, None)
    return DEFAULTS[name] if value is None else value


# ------------------------------------------------------------------------------------------------ loading
def _describe(source: Any) -> str:
    """How an error names a media item: its path, or the size of its bytes (never the bytes themselves)."""
    if isinstance(source, dict):
        if source.get("path"):
            return f"`{source['path']}`"
        source = source.get("bytes")
    if isinstance(source, (bytes, bytearray)):
        return f"({len(source)} bytes of data)"
    if isinstance(source, (str, os.PathLike)):
        return f"`{os.fspath(source)}`"
    return f"({type(source).__name__})"


def load_image(source: Any) -> "Image":
    """An RGB PIL image from a path, PIL image, bytes or a {"path"/"bytes"} dict.

    A file that is missing, not an image, truncated or a decompression bomb (PIL's pixel limit) is a ValueError
    naming the source, so data loading can name the row and the API answer 400.
    """
    from PIL import Image

    name = _describe(source)
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray, str, os.PathLike)):
        opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        try:
            with Image.open(opened) as image:
                image.load()  # the pixels, before the file closes
        except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError too
            raise ValueError(f"cannot read image {name}: {err}") from err
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_image(image: "Image", max_pixels: int, min_pixels: int) -> "Image":
    """Scale (keeping the aspect ratio) into [min_pixels, max_pixels] of area; the processor resizes further."""
    from PIL import Image

    width, height = image.size
    area = width * height
    if area > max_pixels:
        factor = math.sqrt(max_pixels / area)
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
    elif area < min_pixels:
        factor = math.sqrt(min_pixels / area)
        size = (math.ceil(width * factor), math.ceil(height * factor))
    else:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)


def load_images(images: Sequence[Any], processor: Any) -> list["Image"]:
    max_pixels, min_pixels = setting(processor, "image_max_pixels"), setting(processor, "image_min_pixels")
    return [resize_image(load_image(image), max_pixels, min_pixels) for image in images]


class Video(NamedTuple):
    """A loaded video. `fps` is the rate the kept frames are spaced at (what Qwen2.5-VL's `second_per_grid_ts`
    divides the temporal patch by); `timestamps` are each kept frame's second in the source (Qwen3-VL writes them)."""

    frames: list["Image"]
    fps: float
    timestamps: list[float]


def _plan(total: int, source_fps: float, fps: float, maxlen: int) -> tuple[list[int], float]:
    """Which of `total` frames (at `source_fps`) sample the video at `fps`, at most `maxlen` of them, and the rate
    the kept frames are spaced at. Frames are taken at an even stride from the first one (as transformers' video
    processors sample), so a capped video keeps an even spacing, only wider."""
    count = max(1, min(total, maxlen, math.floor(total * fps / source_fps + 1e-9)))
    indices = [i * total // count for i in range(count)]
    return indices, source_fps * count / total


def _frame_fitter(processor: Any) -> Any:
    """Resizes each frame as it is loaded: the first into the video pixel limits, the others to the first's size."""
    max_pixels, min_pixels = setting(processor, "video_max_pixels"), setting(processor, "video_min_pixels")
    size: list[tuple[int, int]] = []

    def fit(frame: "Image") -> "Image":
        if not size:
            frame = resize_image(frame, max_pixels, min_pixels)
            size.append(frame.size)
        return frame if frame.size == size[0] else frame.resize(size[0])

    return fit


def load_video(source: Any, processor: Any) -> Video:
    """The frames of a video sampled at `video_fps`, at most `video_maxlen` of them, all of the first one's size.

    A list of frames (images in any form, or their paths as one JSON list) is taken as already sampled at
    `video_fps`; a file (path, bytes or dict) is decoded with PyAV. Only the sampled frames are converted to
    images, so memory does not grow with the video's length.
    """
    fps, maxlen = float(setting(processor, "video_fps")), int(setting(processor, "video_maxlen"))
    fit = _frame_fitter(processor)
    if isinstance(source, str) and source.startswith("["):  # frame paths stored as one JSON list (converter.py)
        source = json.loads(source)
    if isinstance(source, dict) and "frames" in source:
        source = source["frames"]
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("a video given as a list of frames has no frames")
        indices, rate = _plan(len(source), fps, fps, maxlen)
        return Video([fit(load_image(source[i])) for i in indices], rate, [i / fps for i in indices])
    return _decode_video(source, fps, maxlen, fit)


def _video_input(source: Any) -> Any:
    """What av.open reads: a path, or a fresh buffer over the bytes (so the video can be opened again)."""
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise TypeError(f"cannot read a video from {type(source).__name__}")


@contextmanager
def _open_video(av: Any, source: Any, name: str) -> Iterator[tuple[Any, Any]]:
    """(container, first video stream); PyAV's errors, here or while decoding, become a ValueError naming the video."""
    av_error = getattr(getattr(av, "error", None), "FFmpegError", None) or getattr(av, "AVError", None)
    errors = (OSError, EOFError, *((av_error,) if isinstance(av_error, type) else ()))
    try:
        with av.open(_video_input(source)) as container:
            streams = container.streams.video
            if not streams:
                raise ValueError(f"video {name} has no video stream")
            yield container, streams[0]
    except errors as err:
        raise ValueError(f"cannot decode video {name}: {err}") from err


def _stream_info(container: Any, stream: Any, fps: float) -> tuple[float, int | None]:
    """(frames per second, frame count) of a stream: the count the container reports, else estimated from the
    duration, else None (unknown: the caller counts). A stream without a rate is taken as sampled at `fps`."""
    total = int(getattr(stream, "frames", 0) or 0) or None
    duration = None
    if getattr(stream, "duration", None) and getattr(stream, "time_base", None):
        duration = float(stream.duration * stream.time_base)
    elif getattr(container, "duration", None):
        duration = container.duration / 1_000_000  # in av.time_base units (microseconds)
    rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", None)
    rate = float(rate) if rate else (total / duration if total and duration else fps)
    if total is None and duration:
        total = max(1, round(duration * rate))  # an estimate: decoding stops at the stream's end anyway
    return rate, total


def _take(decoded: Iterable[Any], indices: list[int], fit: Any) -> tuple[list["Image"], list[int]]:
    """Converts only the frames at `indices` (decoding stops after the last), resized as they come."""
    wanted, last = set(indices), indices[-1]
    frames, kept = [], []
    for i, frame in enumerate(decoded):
        if i in wanted:
            frames.append(fit(frame.to_image()))
            kept.append(i)
        if i >= last:
            break
    return frames, kept


def _decode_video(source: Any, fps: float, maxlen: int, fit: Any) -> Video:
    """Samples a video file: the frame indices come from the stream's frame count (or duration) first, so only the
    kept frames are converted; a stream that reports neither is decoded twice, once just to count."""
    name = _describe(source)
    try:
        import av
    except ImportError as err:
        raise ValueError(f"reading video {name} needs PyAV: `pip install av` (or give the video as a list of frame "
                         "images)") from err
    with _open_video(av, source, name) as (container, stream):
        source_fps, total = _stream_info(container, stream, fps)
        if total is not None:
            indices, rate = _plan(total, source_fps, fps, maxlen)
            frames, kept = _take(container.decode(stream), indices, fit)
    if total is None:
        with _open_video(av, source, name) as (container, stream):
            total = sum(1 for _ in container.decode(stream))
        if total:
            indices, rate = _plan(total, source_fps, fps, maxlen)
            with _open_video(av, source, name) as (container, stream):
                frames, kept = _take(container.decode(stream), indices, fit)
    if not total or not frames:
        raise ValueError(f"no frames could be decoded from video {name}")
    return Video(frames, rate, [i / source_fps for i in kept])


def load_audio(source: Any, sampling_rate: int) -> "np.ndarray":
    """Mono float32 samples at `sampling_rate` from a .wav path/bytes, an array, or a {"array", "sampling_rate"},
    {"path"} or {"bytes"} dict. Arrays without a rate are taken as already at `sampling_rate`. An unreadable file,
    or one that needs the missing soundfile package, is a ValueError naming the source."""
    import numpy as np

    rate = sampling_rate
    name = _describe(source)
    if isinstance(source, dict):
        if source.get("array") is not None:
            source, rate = source["array"], source.get("sampling_rate") or sampling_rate
        else:
            source = source.get("bytes") or source.get("path")
    if hasattr(source, "numpy") and not isinstance(source, np.ndarray):  # a torch tensor
        source = source.numpy()
    if isinstance(source, (bytes, bytearray)):
        data = io.BytesIO(source)
        array, rate = _read_wav(data, name) if source[:4] == b"RIFF" else _read_with_soundfile(data, name)
    elif isinstance(source, (str, os.PathLike)):
        array, rate = _read_audio_file(os.fspath(source), name)
    else:
        array = np.asarray(source, dtype=np.float32)
    if array.ndim > 1:  # (channels, samples) or (samples, channels): average the shorter axis away
        array = array.mean(axis=int(np.argmin(array.shape)))
    if rate != sampling_rate:
        from scipy.signal import resample_poly

        gcd = math.gcd(int(rate), int(sampling_rate))
        array = resample_poly(array, int(sampling_rate) // gcd, int(rate) // gcd)
    return np.ascontiguousarray(array, dtype=np.float32)


def _read_audio_file(path: str, name: str) -> tuple["np.ndarray", int]:
    if not path.lower().endswith(".wav"):
        return _read_with_soundfile(path, name)
    try:
        with open(path, "rb") as f:
            return _read_wav(f, name)
    except OSError as err:
        raise ValueError(f"cannot read audio {name}: {err}") from err


def _read_with_soundfile(source: Any, name: str) -> tuple["np.ndarray", int]:
    """Formats other than PCM .wav need soundfile (optional): its absence is a ValueError saying what to install."""
    try:
        import soundfile
    except ImportError as err:
        raise ValueError(f"reading audio {name} needs soundfile (`pip install soundfile`); PCM .wav files need "
                         "nothing more") from err
    try:
        array, rate = soundfile.read(source, dtype="float32", always_2d=False)
    except (RuntimeError, OSError, EOFError, TypeError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read audio {name}: {err}") from err
    return array, int(rate)


def _read_wav(f: Any, name: str) -> tuple["np.ndarray", int]:
    """PCM .wav with the standard library: 8-bit unsigned, 16/24/32-bit signed."""
    import wave

    import numpy as np

    try:
        with wave.open(f, "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{name} is not a PCM .wav file ({err}); install soundfile for other formats") from err
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit little-endian: widen to 32 bits
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((bytes3.shape[0], 4), dtype=np.uint8)
        padded[:, 1:] = bytes3
        data = padded.view("<i4").reshape(-1).astype(np.float32) / 2.0**31
    elif width in (2, 4):
        dtype = "<i2" if width == 2 else "<i4"
        data = np.frombuffer(raw, dtype=dtype).astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise ValueError(f"{name}: unsupported sample width of {width} bytes")
    return data.reshape(-1, channels).mean(axis=1), rate


def _kwargs(processor: Any, modality: str) -> dict[str, Any]:
    """The call arguments the HF processor itself hands its image processor / feature extractor (its defaults)."""
    try:
        tokenizer = getattr(processor, "tokenizer", None)
        merged = processor._merge_kwargs(tokenizer_init_kwargs=getattr(tokenizer, "init_kwargs", {}))
        kwargs = dict(merged.get(f"{modality}_kwargs", {}))
    except (AttributeError, TypeError, KeyError, ValueError):
        kwargs = dict(getattr(type(processor), f"{modality}_kwargs", None) or {})
    return {k: v for k, v in kwargs.items() if v is not None and k != "return_tensors"}


def _token(tokenizer: Any, name: str, default: str) -> str:
    """A family token: the tokenizer's named attribute (e.g. `image_token`) when it has one, else the default."""
    value = getattr(tokenizer, name, None) if tokenizer is not None else None
    return value if isinstance(value, str) and value else default


def _count(counts: Any, kind: str) -> int:
    """One example's number of `kind` media from its counts: a (images, videos, audios) tuple or a mapping."""
    return int(counts[kind] if isinstance(counts, dict) else counts[KINDS.index(kind)])


def _as_batch(ids: Any) -> "torch.Tensor":
    import torch

    return ids if isinstance(ids, torch.Tensor) else torch.tensor([list(row) for row in ids], dtype=torch.long)


# ------------------------------------------------------------------------------------------------ plugins
class BasePlugin:
    """Text only: any media is refused with a clear error."""

    name = "base"
    kinds: tuple[str, ...] = ()
    tokens: dict[str, str] = {}  # tokenizer attribute name -> default token text, for media_token_ids

    # ------------------------------------------------------------------------------ the public interface
    def check(self, messages: Messages, images: Sequence[Any] | None, videos: Sequence[Any] | None,
              audios: Sequence[Any] | None) -> None:
        """Placeholders must match the media one to one (a silent mismatch would shift every image)."""
        marks = media_placeholders()
        for kind, media in zip(KINDS, (images, videos, audios)):
            count = len(media or ())
            if kind not in self.kinds:
                if count:
                    hint = "a multimodal template (e.g. qwen2_vl, llava, gemma3, qwen2_audio)" if self.name == "base" \
                        else f"a template whose model takes {kind}"
                    raise ValueError(f"got {count} {kind} but this template's model ({self.name} plugin) takes no "
                                     f"{kind}; use {hint}")
                continue
            found = sum(str(m.get("content") or "").count(marks[kind]) for m in messages)
            if found != count:
                raise ValueError(f"{found} {marks[kind]} placeholder(s) in the messages but {count} {kind} given; "
                                 f"each {marks[kind]} stands for one item of `{kind}`, in order")

    def media_token_texts(self, tokenizer: Any) -> tuple[str, ...]:
        """The media tokens as text, for check_typed (computed once per tokenizer by the caller)."""
        return tuple(t for t in tokenizer.convert_ids_to_tokens(sorted(self.media_token_ids(tokenizer))) if t)

    def check_typed(self, messages: Messages, others: Sequence[str | None], texts: Sequence[str]) -> None:
        """Media tokens written as text (`texts`, from media_token_texts) would become media tokens without media
        (the forward then fails, or pairs an image with the wrong tokens), and placeholders in `others` (the system
        prompt, tools text) are never expanded: both are refused with a plain message."""
        marks = set(media_placeholders().values())
        for text in others:
            for token in (*marks, *texts) if self.kinds else ():
                if text and token in text:
                    raise ValueError(f"the system prompt or tools text holds `{token}`: media placeholders and media "
                                     "tokens belong in the messages only")
        for i, message in enumerate(messages):
            content = str(message.get("content") or "")
            for token in texts:
                if token not in marks and token in content:
                    raise ValueError(f"message {i} holds `{token}`, one of the model's media tokens, as text: write "
                                     "the placeholder (e.g. <image>) and give the media separately")

    def expand_messages(self, messages: Messages, images: Sequence[Any] | None, videos: Sequence[Any] | None,
                        audios: Sequence[Any] | None, processor: Any) -> Messages:
        """Messages with each placeholder replaced by the model tokens the HF processor would put there (new dicts;
        the input is not changed). Media are processed here because the counts depend on their sizes."""
        self.check(messages, images, videos, audios)
        if not (images or videos or audios):
            return messages
        self._require(processor)
        data = self._process(images or [], videos or [], audios or [], processor)
        given = dict(zip(KINDS, (images, videos, audios)))
        texts = {kind: iter(self._texts(kind, data, processor)) for kind in self.kinds if given[kind]}
        marks = media_placeholders()
        kind_of = {marks[kind]: kind for kind in self.kinds}
        pattern = re.compile("|".join(re.escape(mark) for mark in sorted(kind_of, key=len, reverse=True)))
        out = []
        for message in messages:
            content = pattern.sub(lambda m: next(texts[kind_of[m.group(0)]]), str(message.get("content") or ""))
            out.append({**message, "content": content})
        return out

    def expand_ids(self, input_ids: list[int], labels: list[int] | None, images: Sequence[Any] | None,
                   videos: Sequence[Any] | None, audios: Sequence[Any] | None, tokenizer: Any,
                   processor: Any) -> tuple[list[int], list[int] | None]:
        """Tokens added outside the text, with labels masked for them (only PaliGemma has any)."""
        return input_ids, labels

    def mm_inputs(self, images: Sequence[Any] | None, videos: Sequence[Any] | None, audios: Sequence[Any] | None,
                  processor: Any, counts: Sequence[Sequence[int]] | None = None, input_ids: Any = None,
                  labels: Any = None) -> dict[str, "torch.Tensor"]:
        """The batch's media tensors for the model's forward; with the padded `input_ids` (and `labels`) also the
        per-token ones (see the module docstring)."""
        if not (images or videos or audios):
            return {}
        for kind, media in zip(KINDS, (images, videos, audios)):
            if media and kind not in self.kinds:
                raise ValueError(f"got {len(media)} {kind} but this template's model ({self.name} plugin) takes "
                                 f"no {kind}")
        self._require(processor)
        data = self._process(images or [], videos or [], audios or [], processor)
        inputs = self._model_inputs(data, processor, counts)
        if input_ids is not None:
            inputs.update(self._token_inputs(_as_batch(input_ids), labels, data, processor, counts))
        return inputs

    def media_token_ids(self, tokenizer: Any) -> set[int]:
        """Media tokens and their delimiters in this tokenizer: never trained, never cut by truncation."""
        ids = set()
        for attribute, default in self.tokens.items():
            token_id = tokenizer.convert_tokens_to_ids(_token(tokenizer, attribute, default))
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.add(token_id)
        return ids

    # ------------------------------------------------------------------------------ family hooks
    def _require(self, processor: Any) -> None:
        if processor is None:
            raise ValueError(f"the {self.name} plugin needs the model's processor (AutoProcessor) to read media")

    def _process(self, images: Sequence[Any], videos: Sequence[Any], audios: Sequence[Any],
                 processor: Any) -> dict[str, Any]:
        """Run the processor's image processor / feature extractor; every field is a torch tensor or list."""
        data: dict[str, Any] = {}
        if images:
            loaded = load_images(images, processor)
            data.update(self._images(loaded, processor))
        if videos:
            data.update(self._videos([load_video(v, processor) for v in videos], processor))
        if audios:
            data.update(self._audios(audios, processor))
        return data

    def _images(self, images: list["Image"], processor: Any) -> dict[str, Any]:
        return dict(processor.image_processor(images, return_tensors="pt", **_kwargs(processor, "images")))

    def _videos(self, videos: list[Video], processor: Any) -> dict[str, Any]:
        raise ValueError(f"the {self.name} plugin takes no videos")

    def _audios(self, audios: Sequence[Any], processor: Any) -> dict[str, Any]:
        raise ValueError(f"the {self.name} plugin takes no audios")

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        """The text that replaces each placeholder of `kind`, in order."""
        raise NotImplementedError

    def _model_inputs(self, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        return {k: v for k, v in data.items() if k in ("pixel_values", "image_sizes")}

    def _token_inputs(self, input_ids: "torch.Tensor", labels: Any, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        return {}


class LlavaPlugin(BasePlugin):
    """LLaVA-1.5: one `<image>` token per vision-tower patch (minus CLS under the "default" feature strategy)."""

    name = "llava"
    kinds = ("images",)
    tokens = {"image_token": "<image>"}

    def _image_token(self, processor: Any) -> str:
        return getattr(processor, "image_token", None) or _token(processor.tokenizer, "image_token", "<image>")

    def _count(self, data: dict[str, Any], index: int, processor: Any) -> int:
        patch = getattr(processor, "patch_size", None)
        if not patch:
            return int(processor.image_seq_length)
        height, width = data["pixel_values"][index].shape[-2:]
        count = (height // patch) * (width // patch) + (getattr(processor, "num_additional_image_tokens", 0) or 0)
        return count - 1 if getattr(processor, "vision_feature_select_strategy", None) == "default" else count

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        token = self._image_token(processor)
        return [token * self._count(data, i, processor) for i in range(len(data["pixel_values"]))]


class LlavaNextPlugin(LlavaPlugin):
    """LLaVA-NeXT (anyres): base patches + the unpadded patches of the best-fitting grid + one newline per row."""

    name = "llava_next"

    def _count(self, data: dict[str, Any], index: int, processor: Any) -> int:
        from transformers.image_processing_utils import select_best_resolution

        orig_height, orig_width = (int(x) for x in data["image_sizes"][index])
        height, width = data["pixel_values"][0][0].shape[-2:]
        best_height, best_width = select_best_resolution([orig_height, orig_width],
                                                         processor.image_processor.image_grid_pinpoints)
        patch = processor.patch_size
        rows, cols = height // patch, width // patch
        cur_height, cur_width = rows * (best_height // height), cols * (best_width // width)
        if orig_width / orig_height > cur_width / cur_height:  # wider than the grid: rows were padded
            cur_height -= ((cur_height - int(round(orig_height * (cur_width / orig_width), 7))) // 2) * 2
        else:
            cur_width -= ((cur_width - int(round(orig_width * (cur_height / orig_height), 7))) // 2) * 2
        count = cur_height * cur_width + cur_height + rows * cols
        count += getattr(processor, "num_additional_image_tokens", 0) or 0
        return count - 1 if getattr(processor, "vision_feature_select_strategy", None) == "default" else count

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        token = self._image_token(processor)
        return [token * self._count(data, i, processor) for i in range(len(data["image_sizes"]))]


class Qwen2VLPlugin(BasePlugin):
    """Qwen2-VL / Qwen2.5-VL: `<|vision_start|>` + grid_t*grid_h*grid_w / merge_size**2 pads + `<|vision_end|>`."""

    name = "qwen2_vl"
    kinds = ("images", "videos")
    tokens = {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
              "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}

    def _names(self, processor: Any) -> dict[str, str]:
        tokenizer = processor.tokenizer
        return {attribute: getattr(processor, attribute, None) or _token(tokenizer, attribute, default)
                for attribute, default in self.tokens.items()}

    def _videos(self, videos: list[Video], processor: Any) -> dict[str, Any]:
        """Frames through the image processor, then merged into temporal patches (no torchvision needed)."""
        import numpy as np
        import torch

        image_processor = processor.image_processor
        temporal, patch = image_processor.temporal_patch_size, image_processor.patch_size
        kwargs = _kwargs(processor, "images")
        all_patches, grids, fps, timestamps = [], [], [], []
        for video in videos:
            # the last frame repeats to fill the last temporal patch, as the video processor pads
            frames = list(video.frames) + [video.frames[-1]] * (-len(video.frames) % temporal)
            out = image_processor(frames, return_tensors="np", **kwargs)
            frame_grids = out["image_grid_thw"]
            if not (frame_grids == frame_grids[0]).all():
                raise ValueError("the frames of a video were resized to different grids")
            _, grid_h, grid_w = (int(x) for x in frame_grids[0])
            pixels = out["pixel_values"]
            channels = pixels.shape[-1] // (temporal * patch * patch)
            # each frame's patches repeat the frame over the temporal axis: keep one copy, then stack
            # `temporal` consecutive frames on that axis: (grid_t * grid_h * grid_w, C * T * p * p).
            single = pixels.reshape(len(frames), grid_h * grid_w, channels, temporal, patch, patch)[:, :, :, 0]
            grid_t = len(frames) // temporal
            merged = single.reshape(grid_t, temporal, grid_h * grid_w, channels, patch, patch)
            merged = merged.transpose(0, 2, 3, 1, 4, 5).reshape(grid_t * grid_h * grid_w, -1)
            all_patches.append(merged)
            grids.append([grid_t, grid_h, grid_w])
            fps.append(video.fps)
            timestamps.append(self._timestamps(video.timestamps, temporal))
        data: dict[str, Any] = {
            "pixel_values_videos": torch.from_numpy(np.ascontiguousarray(np.concatenate(all_patches))),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long),
            "video_timestamps": timestamps,
        }
        if "second_per_grid_ts" in getattr(processor, "model_input_names", ()):
            # Qwen2.5-VL's temporal rope: seconds per temporal patch at the rate the kept frames are spaced at
            # (video_fps, or slower when video_maxlen capped the frames), not the file's own frame rate
            data["second_per_grid_ts"] = torch.tensor([temporal / rate for rate in fps], dtype=torch.float)
        return data

    @staticmethod
    def _timestamps(seconds: list[float], temporal: int) -> list[float]:
        """Seconds at the middle of each temporal patch, from the kept frames' own seconds in the source (Qwen3-VL
        writes them before each frame); the last frame repeats to fill the last patch, as the frames do."""
        seconds = list(seconds) + [seconds[-1]] * (-len(seconds) % temporal)
        return [(seconds[i] + seconds[i + temporal - 1]) / 2 for i in range(0, len(seconds), temporal)]

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        names = self._names(processor)
        merge = processor.image_processor.merge_size ** 2
        if kind == "images":
            return [names["vision_start_token"] + names["image_token"] * (int(grid.prod()) // merge)
                    + names["vision_end_token"] for grid in data["image_grid_thw"]]
        return [self._video_text(grid, stamps, names, merge)
                for grid, stamps in zip(data["video_grid_thw"], data["video_timestamps"])]

    def _video_text(self, grid: Any, stamps: list[float], names: dict[str, str], merge: int) -> str:
        return names["vision_start_token"] + names["video_token"] * (int(grid.prod()) // merge) \
            + names["vision_end_token"]

    def _model_inputs(self, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        keys = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
        return {k: data[k] for k in keys if k in data}

    def _token_inputs(self, input_ids: "torch.Tensor", labels: Any, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        """mm_token_type_ids: 1 on image pads, 2 on video pads (what the model's M-RoPE groups by)."""
        import torch

        names = self._names(processor)
        tokenizer = processor.tokenizer
        image_id = tokenizer.convert_tokens_to_ids(names["image_token"])
        video_id = tokenizer.convert_tokens_to_ids(names["video_token"])
        types = torch.zeros_like(input_ids, dtype=torch.int)
        types[input_ids == image_id] = 1
        types[input_ids == video_id] = 2
        return {"mm_token_type_ids": types}


class Qwen3VLPlugin(Qwen2VLPlugin):
    """Qwen3-VL: images as Qwen2-VL; a video is, per temporal patch, `<t seconds>` + start + pads + end."""

    name = "qwen3_vl"

    def _video_text(self, grid: Any, stamps: list[float], names: dict[str, str], merge: int) -> str:
        per_frame = int(grid[1] * grid[2]) // merge
        return "".join(f"<{stamp:.1f} seconds>" + names["vision_start_token"] + names["video_token"] * per_frame
                       + names["vision_end_token"] for stamp in stamps[: int(grid[0])])


class Gemma3Plugin(BasePlugin):
    """Gemma 3: "\\n\\n<start_of_image>" + mm_tokens_per_image soft tokens + "<end_of_image>\\n\\n" per image (and
    per pan-and-scan crop, after a short sentence, when `image_do_pan_and_scan` is on)."""

    name = "gemma3"
    kinds = ("images",)
    tokens = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}

    def _images(self, images: list["Image"], processor: Any) -> dict[str, Any]:
        kwargs = _kwargs(processor, "images")
        kwargs["do_pan_and_scan"] = bool(setting(processor, "image_do_pan_and_scan"))
        return dict(processor.image_processor(images, return_tensors="pt", **kwargs))

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        tokenizer = processor.tokenizer
        full = getattr(processor, "full_image_sequence", None) or (
            f"\n\n{_token(tokenizer, 'boi_token', '<start_of_image>')}"
            f"{_token(tokenizer, 'image_token', '<image_soft_token>') * processor.image_seq_length}"
            f"{_token(tokenizer, 'eoi_token', '<end_of_image>')}\n\n")
        texts = []
        for crops in data["num_crops"]:
            crops = int(crops)
            texts.append(full if not crops else f"Here is the original image {full} and here are some crops to help "
                         f"you see better " + " ".join([full] * crops))
        return texts

    def _token_inputs(self, input_ids: "torch.Tensor", labels: Any, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        """token_type_ids: 1 on soft image tokens (bidirectional attention within an image), 0 elsewhere."""
        import torch

        tokenizer = processor.tokenizer
        image_id = tokenizer.convert_tokens_to_ids(_token(tokenizer, "image_token", "<image_soft_token>"))
        return {"token_type_ids": (input_ids == image_id).to(torch.long)}


class PaliGemmaPlugin(BasePlugin):
    """PaliGemma: image tokens are a prefix before <bos> (image_seq_length per image), not in the text; the
    prefix (images and the first prompt) attends bidirectionally, the answer causally (token_type_ids)."""

    name = "paligemma"
    kinds = ("images",)
    tokens = {"image_token": "<image>"}

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        return [""] * len(data["pixel_values"])

    def expand_messages(self, messages: Messages, images: Sequence[Any] | None, videos: Sequence[Any] | None,
                        audios: Sequence[Any] | None, processor: Any) -> Messages:
        """Placeholders are removed; `expand_ids` puts the image tokens in front (no pixels needed here)."""
        self.check(messages, images, videos, audios)
        if not images:
            return messages
        mark = media_placeholders()["images"]
        return [{**m, "content": str(m.get("content") or "").replace(mark, "")} for m in messages]

    def expand_ids(self, input_ids: list[int], labels: list[int] | None, images: Sequence[Any] | None,
                   videos: Sequence[Any] | None, audios: Sequence[Any] | None, tokenizer: Any,
                   processor: Any) -> tuple[list[int], list[int] | None]:
        if not images:
            return input_ids, labels
        self._require(processor)
        count = len(images) * int(processor.image_seq_length)
        image_id = tokenizer.convert_tokens_to_ids(_token(tokenizer, "image_token", "<image>"))
        input_ids = [image_id] * count + list(input_ids)
        if labels is not None:
            labels = [IGNORE_INDEX] * count + list(labels)
        return input_ids, labels

    def _token_inputs(self, input_ids: "torch.Tensor", labels: Any, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        """token_type_ids: 0 for the prefix (the images, <bos> and the prompt up to its closing newline, attended
        bidirectionally), 1 for the answer after it up to the last trained token (the processor's `suffix`; padding
        stays 0); without labels (a prompt at inference) all 0. Training thus sees the prompt as inference does.

        The boundary must not depend on `train_on_prompt`, which only changes the labels. The prompt always ends
        with a newline (the template's, as PaliGemma's processor writes it), so: when the token before the first
        trained one ends a line and is not trained, the prompt was masked and the answer starts at that first
        trained token (exact, whatever newlines the prompt holds). Otherwise the prompt is trained too
        (`train_on_prompt: true`; with `mask_history`, only the last turn's), and the prefix runs to the first token
        that ends a line from the first trained token on: PaliGemma's own separator, which is exact for its one-line
        prefixes (a prompt with newlines of its own, or a system prompt, would end the prefix early here)."""
        import torch

        types = torch.zeros_like(input_ids, dtype=torch.long)
        if labels is None:
            return {"token_type_ids": types}
        trained = _as_batch(labels) != IGNORE_INDEX
        tokenizer = processor.tokenizer
        ends_line = {i for i in input_ids.unique().tolist() if tokenizer.decode([i]).endswith("\n")}
        for row, (ids, mask) in enumerate(zip(input_ids.tolist(), trained.tolist())):
            positions = [i for i, on in enumerate(mask) if on]
            if not positions:
                continue
            first, last = positions[0], positions[-1]
            start = first
            if not (first > 0 and ids[first - 1] in ends_line and not mask[first - 1]):
                start = next((i + 1 for i in range(first, len(ids)) if ids[i] in ends_line), first)
            types[row, start:last + 1] = 1  # padding after the answer stays 0, as the processor pads it
        return {"token_type_ids": types}


class MllamaPlugin(BasePlugin):
    """Llama 3.2 Vision: one `<|image|>` token per image; images reach the text through cross-attention, masked
    by cross_attention_mask (each image token's span runs to the next image or the end)."""

    name = "mllama"
    kinds = ("images",)
    tokens = {"image_token": "<|image|>"}

    def _images(self, images: list["Image"], processor: Any) -> dict[str, Any]:
        return {"images": images}  # stacked per example in _model_inputs, which knows the examples

    @staticmethod
    def _image_token(processor: Any) -> str:
        return getattr(processor, "image_token", None) or _token(processor.tokenizer, "image_token", "<|image|>")

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        return [self._image_token(processor)] * len(data["images"])

    def _stack(self, data: dict[str, Any], processor: Any, counts: Sequence[Sequence[int]] | None) -> dict[str, Any]:
        import numpy as np
        import torch

        images = data["images"]
        per_example = [_count(c, "images") for c in counts] if counts is not None else [len(images)]
        if sum(per_example) != len(images):
            raise ValueError(f"counts name {sum(per_example)} images but {len(images)} were given")
        groups, start = [], 0
        for n in per_example:
            groups.append(images[start:start + n])
            start += n
        with_images = [g for g in groups if g]
        out = processor.image_processor(with_images, return_tensors="np", **_kwargs(processor, "images"))
        max_images = max(len(g) for g in groups)
        tiles = out["pixel_values"].shape[2]
        pixel_values = np.zeros((len(groups), max_images, *out["pixel_values"].shape[2:]), dtype=np.float32)
        ratio_ids = np.zeros((len(groups), max_images), dtype=np.int64)
        ratio_mask = np.zeros((len(groups), max_images, tiles), dtype=np.int64)
        ratio_mask[:, :, 0] = 1  # as the image processor pads missing images
        num_tiles: list[list[int]] = []
        row = 0
        for i, group in enumerate(groups):
            if not group:
                num_tiles.append([])
                continue
            width = out["pixel_values"].shape[1]
            pixel_values[i, :width] = out["pixel_values"][row]
            ratio_ids[i, :width] = out["aspect_ratio_ids"][row]
            ratio_mask[i, :width] = out["aspect_ratio_mask"][row]
            num_tiles.append(list(out["num_tiles"][row]))
            row += 1
        return {"pixel_values": torch.from_numpy(pixel_values), "aspect_ratio_ids": torch.from_numpy(ratio_ids),
                "aspect_ratio_mask": torch.from_numpy(ratio_mask), "num_tiles": num_tiles, "max_tiles": tiles}

    def _model_inputs(self, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        data.update(self._stack(data, processor, counts))
        return {k: data[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}

    def _token_inputs(self, input_ids: "torch.Tensor", labels: Any, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        import torch

        tokenizer = processor.tokenizer
        image_id = tokenizer.convert_tokens_to_ids(self._image_token(processor))
        batch, length = input_ids.shape
        max_images = data["pixel_values"].shape[1]
        mask = torch.zeros((batch, length, max_images, data["max_tiles"]), dtype=torch.long)
        for b in range(batch):
            positions = (input_ids[b] == image_id).nonzero().flatten().tolist()
            # each image token attends from itself to the next image token (or the end); a run of adjacent image
            # tokens shares the span that follows the run
            spans = [[start, positions[j + 1] if j + 1 < len(positions) else length]
                     for j, start in enumerate(positions)]
            last_end = length
            for span in reversed(spans):
                if span[0] == span[1] - 1:
                    span[1] = last_end
                last_end = span[1]
            tiles = data["num_tiles"][b] if b < len(data["num_tiles"]) else []
            for j, (start, end) in enumerate(spans[: len(tiles)]):
                mask[b, start:end, j, : tiles[j]] = 1
        return {"cross_attention_mask": mask}


class Qwen2AudioPlugin(BasePlugin):
    """Qwen2-Audio: `<|audio_bos|>` + one `<|AUDIO|>` per encoder frame after two stride-2 stages + `<|audio_eos|>`."""

    name = "qwen2_audio"
    kinds = ("audios",)
    tokens = {"audio_bos_token": "<|audio_bos|>", "audio_token": "<|AUDIO|>", "audio_eos_token": "<|audio_eos|>"}

    def _audios(self, audios: Sequence[Any], processor: Any) -> dict[str, Any]:
        extractor = processor.feature_extractor
        rate = int(getattr(processor, "audio_sampling_rate", None) or extractor.sampling_rate)
        arrays = [load_audio(audio, rate) for audio in audios]
        kwargs = {**_kwargs(processor, "audio"), "return_attention_mask": True, "padding": "max_length"}
        out = extractor(arrays, sampling_rate=rate, return_tensors="pt", **kwargs)
        return {"input_features": out["input_features"], "feature_attention_mask": out["attention_mask"]}

    def _texts(self, kind: str, data: dict[str, Any], processor: Any) -> list[str]:
        tokenizer = processor.tokenizer
        names = {attribute: getattr(processor, attribute, None) or _token(tokenizer, attribute, default)
                 for attribute, default in self.tokens.items()}
        texts = []
        for frames in data["feature_attention_mask"].sum(-1).tolist():
            count = ((int(frames) - 1) // 2 + 1 - 2) // 2 + 1
            texts.append(names["audio_bos_token"] + names["audio_token"] * count + names["audio_eos_token"])
        return texts

    def _model_inputs(self, data: dict[str, Any], processor: Any,
                      counts: Sequence[Sequence[int]] | None) -> dict[str, "torch.Tensor"]:
        return {k: data[k] for k in ("input_features", "feature_attention_mask")}


PLUGINS: dict[str, BasePlugin] = {plugin.name: plugin for plugin in (
    BasePlugin(), LlavaPlugin(), LlavaNextPlugin(), Qwen2VLPlugin(), Qwen3VLPlugin(), Gemma3Plugin(),
    PaliGemmaPlugin(), MllamaPlugin(), Qwen2AudioPlugin())}


def get_mm_plugin(name: str | None) -> BasePlugin:
    """The plugin registered under `name` (a template's `mm_plugin`; None means text only)."""
    plugin = PLUGINS.get(name or "base")
    if plugin is None:
        raise ValueError(f"unknown multimodal plugin `{name}`; available: {', '.join(sorted(PLUGINS))}")
    return plugin


__all__ = ["PLUGINS", "BasePlugin", "Video", "get_mm_plugin", "load_audio", "load_image", "load_images", "load_video",
           "resize_image"]
