"""Reading the media that chat requests name, under the server operator's rules.

Reading a file or fetching a URL because a client said so would let any client read the server's disk or reach
its network, so only what the operator allows is read:
- data URLs (base64 or percent-encoded): always; they carry their bytes with the request;
- local paths and file:// URLs: only inside the folder named by API_MEDIA_DIR (symlinks resolved first);
- http(s) URLs: only with API_ALLOW_MEDIA_URLS=1 (the server then fetches whatever a client names).
Everything is read before generation starts, so a bad item is a 400 naming its message and part, never a
failure halfway through an answer.

What the chat model receives (keyword arguments, each present only when the request has such media):
`images`: list of PIL.Image.Image in RGB; `videos` and `audios`: lists whose items are a `str` (the absolute path
of a file inside API_MEDIA_DIR) or `bytes` (the file's contents, from a data URL or a download). WAV audio is
checked readable by the stdlib `wave` module here; other audio formats and videos are passed on undecoded.
"""

import base64
import binascii
import io
import os
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from .protocol import APIError, MediaRef

MEDIA_DIR_ENV = "API_MEDIA_DIR"
ALLOW_URLS_ENV = "API_ALLOW_MEDIA_URLS"
MAX_MB_ENV = "API_MEDIA_MAX_MB"
COLUMNS = {"image": "images", "video": "videos", "audio": "audios"}  # the chat model's keyword per kind


@dataclass
class MediaSettings:
    media_dir: str | None = None  # the only folder local paths may point into; None refuses local paths
    allow_urls: bool = False  # fetch http(s) URLs
    max_bytes: int = 20 * 2**20  # per item, for data URLs and downloads
    timeout: float = 10.0  # seconds per download
    max_items: int = 16  # media parts per request
    max_pixels: int = 25_000_000  # per image: a small compressed file can decode to gigabytes


def _fail(ref: MediaRef, message: str, code: str = "invalid_media") -> APIError:
    return APIError(400, f"{ref.where}: {message}", ref.param, code)


def _too_large(ref: MediaRef, settings: MediaSettings) -> APIError:
    return _fail(ref, f"the {ref.kind} is larger than {settings.max_bytes // 2**20} MB ({MAX_MB_ENV})")


def _data_url(ref: MediaRef, settings: MediaSettings) -> bytes:
    header, comma, payload = ref.url.partition(",")
    if not comma:
        raise _fail(ref, "malformed data URL: expected `data:<type>;base64,<data>`")
    mime = header[len("data:"):].split(";")[0].strip().lower()
    major = mime.split("/")[0]
    if major in COLUMNS and major != ref.kind:
        raise _fail(ref, f"the data URL holds `{mime}`, not a {ref.kind}")
    if header.lower().endswith(";base64"):
        payload = "".join(payload.split())  # line breaks that some encoders insert
        if len(payload) > settings.max_bytes * 4 // 3 + 4:
            raise _too_large(ref, settings)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise _fail(ref, f"the data URL is not valid base64 ({err})") from err
    else:
        data = unquote_to_bytes(payload)
    if not data:
        raise _fail(ref, "the data URL is empty")
    if len(data) > settings.max_bytes:
        raise _too_large(ref, settings)
    return data


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect may lead to another http(s) URL only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(ref: MediaRef, settings: MediaSettings) -> bytes:
    if not settings.allow_urls:
        raise _fail(ref, f"http(s) URLs are refused: this server fetches media URLs only when {ALLOW_URLS_ENV}=1 "
                    "is set; send the media as a data URL instead", "media_not_allowed")
    opener = urllib.request.build_opener(_HTTPOnlyRedirects)
    request = urllib.request.Request(ref.url, headers={"User-Agent": "llamafactory-api"})
    try:
        with opener.open(request, timeout=settings.timeout) as response:
            data = response.read(settings.max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise _fail(ref, f"fetching {ref.url:.200} answered HTTP {err.code}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise _fail(ref, f"could not fetch {ref.url:.200}: {reason}") from err
    if len(data) > settings.max_bytes:
        raise _too_large(ref, settings)
    if not data:
        raise _fail(ref, f"{ref.url:.200} answered an empty body")
    return data


def _local(ref: MediaRef, path: str, settings: MediaSettings) -> str:
    if "\x00" in path:
        raise _fail(ref, "the path holds a NUL character", "invalid_value")
    if not settings.media_dir:
        raise _fail(ref, f"local files are refused: this server reads media files only from the folder named by "
                    f"{MEDIA_DIR_ENV}, which is not set; send the media as a data URL instead", "media_not_allowed")
    root = os.path.realpath(settings.media_dir)
    full = os.path.realpath(os.path.join(root, path))  # an absolute path stays itself; `..` and links resolved
    if os.path.commonpath([root, full]) != root:
        raise _fail(ref, f"`{path:.200}` is outside the folder named by {MEDIA_DIR_ENV}; only files inside it "
                    "can be read", "media_not_allowed")
    if not os.path.isfile(full):
        raise _fail(ref, f"`{path:.200}` is not a file in the folder named by {MEDIA_DIR_ENV}")
    return full


def read_source(ref: MediaRef, settings: MediaSettings) -> bytes | str:
    """The item's bytes (data URL, download) or the absolute path of an allowed local file."""
    if ref.url[:5].lower() == "data:":
        return _data_url(ref, settings)
    parts = urlsplit(ref.url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _fetch(ref, settings)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _fail(ref, "file:// URLs must name a file on this server (no host)")
        return _local(ref, urllib.request.url2pathname(parts.path), settings)
    if len(scheme) > 1:  # one letter is a Windows drive (`C:\...`), i.e. a path
        raise _fail(ref, f"unsupported URL scheme `{scheme}`; send a data URL, an http(s) URL or a path",
                    "invalid_value")
    return _local(ref, ref.url, settings)


def _image(ref: MediaRef, source: bytes | str, max_pixels: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise _fail(ref, f"the image is {width}x{height} pixels; this server takes at most {max_pixels:,} "
                            "pixels per image")
            return image.convert("RGB")  # decodes now, so a truncated file is refused here
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise _fail(ref, f"not an image that can be read ({type(err).__name__}: {err})"[:300]) from err


def _audio(ref: MediaRef, source: bytes | str) -> bytes | str:
    head = source[:4] if isinstance(source, bytes) else b""
    is_wav = ref.audio_format == "wav" or head == b"RIFF" or (isinstance(source, str)
                                                              and source.lower().endswith((".wav", ".wave")))
    if is_wav:
        try:
            with wave.open(io.BytesIO(source) if isinstance(source, bytes) else source) as clip:
                if clip.getnframes() == 0:
                    raise wave.Error("no samples")
        except (wave.Error, EOFError, OSError) as err:
            raise _fail(ref, f"not a readable PCM WAV file ({err})") from err
    return source


def load_media(refs: list[MediaRef], settings: MediaSettings) -> dict[str, list[Any]]:
    """Read every media part, in order: {"images": [...], "videos": [...], "audios": [...]}, each key present
    only when the request has that kind, so a text-only request calls the chat model exactly as before."""
    if len(refs) > settings.max_items:
        raise _fail(refs[settings.max_items], f"a request may carry at most {settings.max_items} media parts, this one "
                    f"has {len(refs)}")
    loaded: dict[str, list[Any]] = {}
    for ref in refs:
        source = read_source(ref, settings)
        if ref.kind == "image":
            item = _image(ref, source, settings.max_pixels)
        elif ref.kind == "audio":
            item = _audio(ref, source)
        else:
            item = source
        loaded.setdefault(COLUMNS[ref.kind], []).append(item)
    return loaded
