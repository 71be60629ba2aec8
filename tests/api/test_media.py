"""Media content parts in chat requests: placeholders at the parts' places, media read under the operator's
rules (data URLs always, local files only inside API_MEDIA_DIR, http(s) only with API_ALLOW_MEDIA_URLS) and
passed to the chat model as images=/videos=/audios=; everything else is a 400 naming the message and part."""

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from llamafactory.chat.base import Response

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data",
                    "mllm_demo_data")


class FakeChatModel:
    """Records what the API passes; answers "ok" (streams "o", "k")."""

    is_reward_model = False

    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def achat(self, messages, system=None, tools=None, **kwargs):
        self.calls.append({"messages": messages, "system": system, **kwargs})
        return [Response("ok", 1, 3, "stop")]

    async def astream_chat(self, messages, system=None, tools=None, info=None, **kwargs):
        self.calls.append({"messages": messages, "system": system, **kwargs})
        info.finish_reason = "stop"
        for piece in ("o", "k"):
            yield piece

    def parse_tool_calls(self, text):
        return []


def png_bytes(colour=(220, 30, 30), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


@pytest.fixture
def fake():
    return FakeChatModel()


def post(client, *content, history=()):
    return client.post("/v1/chat/completions", json={"messages": [*history, {"role": "user",
                                                                             "content": list(content)}]})


def assert_400(reply, where: str, *words: str, code: str | None = None) -> dict:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["message"].startswith(where), error["message"]
    index = where.split("[")[1].split("]")[0]
    assert error["param"] == f"messages.{index}.content"
    for word in words:
        assert word in error["message"], error["message"]
    if code:
        assert error["code"] == code
    return error


def test_data_url_images_become_placeholders_and_pil_images(fake, make_client):
    client = make_client(fake)
    red, blue = png_bytes((220, 30, 30)), png_bytes((30, 70, 220), (5, 7))
    history = [{"role": "system", "content": "be brief"},
               {"role": "user", "content": [text("Look: "), image_part(data_url(red))]},
               {"role": "assistant", "content": "A red picture."}]
    reply = post(client, image_part(data_url(blue)), text(" and "),
                 {"type": "image_url", "image_url": data_url(red)}, text(" differ?"), history=history)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "ok"
    (call,) = fake.calls
    assert call["messages"] == [{"role": "user", "content": "Look: <image>"},
                                {"role": "assistant", "content": "A red picture."},
                                {"role": "user", "content": "<image> and <image> differ?"}]
    assert call["system"] == "be brief" and "videos" not in call and "audios" not in call
    images = call["images"]
    assert [(i.mode, i.size) for i in images] == [("RGB", (8, 6)), ("RGB", (5, 7)), ("RGB", (8, 6))]
    assert images[0].getpixel((0, 0)) == (220, 30, 30) and images[1].getpixel((4, 6)) == (30, 70, 220)


def test_text_only_requests_pass_no_media_keywords(fake, make_client):
    client = make_client(fake)
    assert post(client, text("Hello "), text("there")).status_code == 200
    assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi <image>"}]}
                       ).status_code == 200  # a literal placeholder in a text-only request is the engine's business
    assert all(not {"images", "videos", "audios"} & set(c) for c in fake.calls) and len(fake.calls) == 2
    assert fake.calls[0]["messages"] == [{"role": "user", "content": "Hello there"}]


def test_streaming_passes_media_too(fake, make_client):
    client = make_client(fake)
    reply = client.post("/v1/chat/completions", json={"stream": True, "messages": [
        {"role": "user", "content": [image_part(data_url(png_bytes())), text("What is it?")]}]})
    assert reply.status_code == 200 and '"content": "o"' in reply.text and reply.text.rstrip().endswith("[DONE]")
    (call,) = fake.calls
    assert call["messages"][0]["content"] == "<image>What is it?" and len(call["images"]) == 1


def test_audio_and_video_parts(fake, make_client, tmp_path):
    wav = open(os.path.join(DEMO, "tone_440hz.wav"), "rb").read()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    client = make_client(fake, media_dir=str(tmp_path))
    reply = post(client, {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(),
                                                                 "format": "wav"}},
                 text("Pitch? Then "), {"type": "video_url", "video_url": {"url": "clip.mp4"}},
                 {"type": "video_url", "video_url": {"url": data_url(b"fake mp4", "video/mp4")}},
                 {"type": "audio_url", "audio_url": {"url": data_url(wav, "audio/wav")}})
    assert reply.status_code == 200, reply.text
    (call,) = fake.calls
    assert call["messages"][0]["content"] == "<audio>Pitch? Then <video><video><audio>"
    assert call["audios"] == [wav, wav] and all(isinstance(a, bytes) for a in call["audios"])
    assert call["videos"] == [str(clip.resolve()), b"fake mp4"] and "images" not in call


def test_placeholders_follow_the_environment(fake, make_client, monkeypatch):
    monkeypatch.setenv("IMAGE_PLACEHOLDER", "<|img|>")
    assert post(make_client(fake), text("see "), image_part(data_url(png_bytes()))).status_code == 200
    assert fake.calls[0]["messages"][0]["content"] == "see <|img|>"


def test_local_files_only_inside_the_media_dir(fake, make_client, tmp_path):
    allowed = tmp_path / "media"
    allowed.mkdir()
    (allowed / "red.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes((0, 0, 0)))
    (allowed / "link.png").symlink_to(tmp_path / "secret.png")
    refused = assert_400(post(make_client(fake), image_part(str(allowed / "red.png"))), "messages[0].content[0]",
                         "image_url", "API_MEDIA_DIR", "not set", code="media_not_allowed")
    assert "data URL" in refused["message"]
    client = make_client(fake, media_dir=str(allowed))
    for url in ("red.png", str(allowed / "red.png"), (allowed / "red.png").as_uri(), "sub/../red.png"):
        assert post(client, image_part(url)).status_code == 200, url
    assert [c["images"][0].getpixel((0, 0)) for c in fake.calls] == [(220, 30, 30)] * 4
    for url in ("../secret.png", str(tmp_path / "secret.png"), (tmp_path / "secret.png").as_uri(), "link.png",
                "/etc/passwd"):
        assert_400(post(client, text("x"), image_part(url)), "messages[0].content[1]", "outside",
                   "API_MEDIA_DIR", code="media_not_allowed")
    assert_400(post(client, image_part("missing.png")), "messages[0].content[0]", "not a file")
    assert_400(post(client, image_part("file://otherhost/red.png")), "messages[0].content[0]", "no host")
    assert_400(post(client, image_part("ftp://example.com/a.png")), "messages[0].content[0]", "scheme `ftp`")
    assert len(fake.calls) == 4


@contextlib.contextmanager
def http_server(folder: str):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_urls_only_when_enabled(fake, make_client, tmp_path):
    (tmp_path / "blue.png").write_bytes(png_bytes((30, 70, 220), (40, 40)))
    with http_server(str(tmp_path)) as base:
        url = f"{base}/blue.png"
        assert_400(post(make_client(fake), image_part(url)), "messages[0].content[0]", "API_ALLOW_MEDIA_URLS=1",
                   code="media_not_allowed")
        client = make_client(fake, allow_media_urls=True)
        assert post(client, image_part(url)).status_code == 200
        assert fake.calls[0]["images"][0].getpixel((3, 3)) == (30, 70, 220)
        assert_400(post(client, image_part(f"{base}/nope.png")), "messages[0].content[0]", "HTTP 404")
        small = make_client(fake, allow_media_urls=True, max_media_bytes=100)
        assert_400(post(small, image_part(url)), "messages[0].content[0]", "larger than")
    assert len(fake.calls) == 1


@pytest.mark.parametrize("part,words", [
    (image_part("data:image/png;base64,@@not base64@@"), ("base64",)),
    (image_part(data_url(b"these bytes are no image")), ("not an image",)),
    (image_part(data_url(png_bytes()[:40])), ("not an image",)),
    (image_part("data:image/png;base64"), ("malformed data URL",)),
    (image_part("data:image/png;base64,"), ("empty",)),
    (image_part(data_url(png_bytes(), "audio/wav")), ("`audio/wav`, not a image",)),
    ({"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF....WAVEjunk").decode(),
                                             "format": "wav"}}, ("not a readable PCM WAV",)),
    ({"type": "input_audio", "input_audio": {"data": "AAAA"}}, ("input_audio", "format")),
    ({"type": "image_url", "image_url": {"detail": "low"}}, ("image_url", "url")),
    ({"type": "image_url"}, ("image_url", "url")),
    ({"type": "file", "file": {"file_id": "x"}}, ("unknown content part type `file`",)),
])
def test_bad_parts_are_400_naming_message_and_part(fake, make_client, part, words):
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert_400(post(make_client(fake), text("a"), text("b"), part, history=history), "messages[2].content[2]",
               *words)
    assert fake.calls == []


def test_media_outside_user_turns_and_typed_placeholders_are_refused(fake, make_client):
    client = make_client(fake)
    image = image_part(data_url(png_bytes()))
    for role in ("system", "assistant"):
        messages = [{"role": role, "content": [image]}, {"role": "user", "content": "hi"}]
        if role == "assistant":
            messages.insert(0, {"role": "user", "content": "hi"})
        reply = client.post("/v1/chat/completions", json={"messages": messages})
        assert_400(reply, f"messages[{1 if role == 'assistant' else 0}].content[0]", "user messages only",
                   code="unsupported_content")
    history = [{"role": "user", "content": "what is <audio>?"}, {"role": "assistant", "content": "a tag"}]
    assert_400(post(client, image, history=history), "messages[0].content", "`<audio>`", "content part")
    assert_400(post(client, text("this <image> and"), image), "messages[0].content[0]", "`<image>`")
    assert fake.calls == []


def test_data_urls_are_limited_in_size(fake, make_client):
    client = make_client(fake, max_media_bytes=64)
    assert_400(post(client, image_part(data_url(png_bytes(size=(64, 64)) + b"\0" * 200))),
               "messages[0].content[0]", "larger than")


def test_settings_from_the_environment(monkeypatch, tmp_path):
    from llamafactory.api.app import Settings
    from llamafactory.extras.errors import ConfigError

    default = Settings.from_env()
    assert (default.media_dir, default.allow_media_urls, default.max_media_bytes) == (None, False, 20 * 2**20)
    monkeypatch.setenv("API_MEDIA_DIR", str(tmp_path))
    monkeypatch.setenv("API_ALLOW_MEDIA_URLS", "1")
    monkeypatch.setenv("API_MEDIA_MAX_MB", "3")
    settings = Settings.from_env()
    assert (settings.media_dir, settings.allow_media_urls, settings.max_media_bytes) == (str(tmp_path), True,
                                                                                          3 * 2**20)
    monkeypatch.setenv("API_MEDIA_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="API_MEDIA_DIR"):
        Settings.from_env()


def test_demo_image_round_trip_keeps_pixels(fake, make_client):
    """The decoded image is the picture that was sent (the demo set's red circle)."""
    path = os.path.join(DEMO, "red_circle.png")
    with open(path, "rb") as f:
        reply = post(make_client(fake), image_part(data_url(f.read())), text("What shape?"))
    assert reply.status_code == 200
    with Image.open(path) as original:
        assert np.array_equal(np.asarray(fake.calls[0]["images"][0]), np.asarray(original.convert("RGB")))
    assert json.loads(reply.text)["choices"][0]["finish_reason"] == "stop"


def test_request_limits_on_parts_pixels_and_odd_paths(fake, make_client, monkeypatch, tmp_path):
    from llamafactory.api import media

    client = make_client(fake, media_dir=str(tmp_path))
    small = data_url(png_bytes())
    assert post(client, *[image_part(small)] * 16).status_code == 200
    assert_400(post(client, *[image_part(small)] * 17), "messages[0].content[16]", "at most 16 media parts")
    from llamafactory.api.app import Settings

    monkeypatch.setattr(Settings, "media", lambda self: media.MediaSettings(max_pixels=40))  # 8x6 is 48 pixels
    client = make_client(fake, media_dir=str(tmp_path))
    assert_400(post(client, image_part(small)), "messages[0].content[0]", "8x6 pixels", "at most 40")
    assert_400(post(client, image_part("red\x00.png")), "messages[0].content[0]", "NUL", code="invalid_value")
    assert len(fake.calls) == 1


def test_media_are_decoded_inside_a_concurrency_slot(fake, make_client, monkeypatch):
    """A flood of image requests cannot decode more images at once than MAX_CONCURRENT allows to generate."""
    from llamafactory.api import app as app_module

    held = []
    acquire, release, load = app_module.Limiter.acquire, app_module.Slot.release, app_module.load_media

    async def counting_acquire(self):
        slot = await acquire(self)
        held.append(slot)
        return slot

    async def counting_release(self):
        if self in held:
            held.remove(self)
        await release(self)

    seen = []

    def spy(refs, settings):
        seen.append(len(held))  # slots held while this request's media are decoded
        return load(refs, settings)

    monkeypatch.setattr(app_module.Limiter, "acquire", counting_acquire)
    monkeypatch.setattr(app_module.Slot, "release", counting_release)
    monkeypatch.setattr(app_module, "load_media", spy)
    client = make_client(fake)
    for stream in (False, True):
        reply = client.post("/v1/chat/completions", json={"stream": stream, "messages": [
            {"role": "user", "content": [image_part(data_url(png_bytes()))]}]})
        assert reply.status_code == 200, reply.text
    assert seen == [1, 1] and len(fake.calls) == 2 and all("images" in c for c in fake.calls)
