"""Multimodal plugins against the families' own HF processors (tiny ones from tests/mm_models.py): the expanded
placeholders hold exactly the processor's media tokens, the tensors are the processor's, and they run through
the tiny models' forward."""

import io
import math
import re
import sys
import types
import wave
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from llamafactory.data.mm_plugin import PLUGINS, get_mm_plugin, load_audio, load_image, load_video
from llamafactory.data.template import get_template
from llamafactory.extras.constants import IGNORE_INDEX
from tests.mm_models import FAMILIES, build_model, build_processor

# How each family's own prompt text marks one image, before its processor expands it.
HF_IMAGE_MARK = {
    "llava": "<image>", "llava_next": "<image>", "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>", "gemma3": "<start_of_image>", "mllama": "<|image|>",
}
SIZES = [(40, 60), (60, 30), (33, 33), (100, 50)]


@cache
def processor(family: str):
    return build_processor(family)


def fresh_processor(family: str):
    return build_processor(family)


def picture(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    image = Image.new("RGB", size, (20, 40, 160))
    ImageDraw.Draw(image).ellipse([size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4], fill=colour)
    return image


def tone(seconds: float, rate: int = 16000, hertz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * math.pi * hertz * t)).astype(np.float32)


def same(ours: torch.Tensor, theirs) -> bool:
    theirs = torch.as_tensor(np.asarray(theirs))
    if ours.is_floating_point():
        return ours.shape == theirs.shape and torch.allclose(ours, theirs.to(ours.dtype), atol=1e-6)
    return torch.equal(ours.long(), theirs.long())


# ------------------------------------------------------------------------------------- the expansion
@pytest.mark.parametrize("family", sorted(HF_IMAGE_MARK))
def test_expansion_holds_the_processors_tokens_and_tensors(family):
    proc = processor(family)
    tok = proc.tokenizer
    plugin = get_mm_plugin(family)
    images = [picture(size) for size in SIZES]
    words = [f" Picture {i} shows a circle." for i in range(len(images))]
    bos = tok.bos_token if family == "mllama" else ""  # Mllama's processor adds <bos> to a prompt without one
    messages = [{"role": "user", "content": "".join("<image>" + w for w in words)}]
    expanded = plugin.expand_messages(messages, images, [], [], proc)[0]["content"]
    hf_text = bos + "".join(HF_IMAGE_MARK[family] + w for w in words)
    nested = family in ("gemma3", "mllama")
    hf = proc(text=[hf_text], images=[images] if nested else images, add_special_tokens=False, return_tensors="pt")
    ids = tok(bos + expanded, add_special_tokens=False)["input_ids"]
    assert ids == hf["input_ids"][0].tolist()
    media = plugin.media_token_ids(tok)
    assert sum(i in media for i in ids) >= len(images)

    inputs = plugin.mm_inputs(images, [], [], proc, counts=[(len(images), 0, 0)], input_ids=hf["input_ids"])
    assert inputs
    for key, value in inputs.items():
        assert key in hf, key
        assert same(value, hf[key]), key


def test_an_image_placeholder_expands_per_image_size_for_anyres_and_qwen():
    """llava_next and qwen2_vl counts depend on the image's size; llava's does not."""
    counts = {}
    for family in ("llava", "llava_next", "qwen2_vl"):
        proc, plugin = processor(family), get_mm_plugin(family)
        image_id = proc.tokenizer.convert_tokens_to_ids(proc.image_token)
        counts[family] = []
        for size in SIZES:
            text = plugin.expand_messages([{"role": "user", "content": "<image>"}], [picture(size)], [], [], proc)
            counts[family].append(proc.tokenizer(text[0]["content"], add_special_tokens=False)["input_ids"]
                                  .count(image_id))
    assert len(set(counts["llava"])) == 1 and counts["llava"][0] == 4
    assert len(set(counts["llava_next"])) > 1
    assert len(set(counts["qwen2_vl"])) > 1


def test_gemma3_pan_and_scan_follows_the_processor():
    proc = fresh_processor("gemma3")
    proc.image_do_pan_and_scan = True
    plugin = get_mm_plugin("gemma3")
    images = [picture((1200, 300)), picture((60, 60))]  # crops for the wide one only
    expanded = plugin.expand_messages([{"role": "user", "content": "<image>Look.<image>"}], images, [], [], proc)
    hf = proc(text=["<start_of_image>Look.<start_of_image>"], images=[images], do_pan_and_scan=True,
              add_special_tokens=False, return_tensors="pt")
    ids = proc.tokenizer(expanded[0]["content"], add_special_tokens=False)["input_ids"]
    assert ids == hf["input_ids"][0].tolist()
    assert "here are some crops" in expanded[0]["content"]
    inputs = plugin.mm_inputs(images, [], [], proc, input_ids=hf["input_ids"])
    assert inputs["pixel_values"].shape[0] > len(images)
    assert same(inputs["pixel_values"], hf["pixel_values"]) and same(inputs["token_type_ids"], hf["token_type_ids"])


def test_paligemma_prefix_labels_and_token_types_follow_the_processor():
    proc = processor("paligemma")
    tok = proc.tokenizer
    plugin, template = get_mm_plugin("paligemma"), get_template("paligemma")
    image = picture((50, 40))
    messages = [{"role": "user", "content": "<image>What is in the picture?"},
                {"role": "assistant", "content": "A red circle."}]
    expanded = plugin.expand_messages(messages, [image], [], [], proc)
    assert "<image>" not in expanded[0]["content"]
    [(prompt, answer)] = template.encode_multiturn(tok, expanded)
    ids, labels = plugin.expand_ids(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, [image], [], [], tok,
                                    proc)
    hf = proc(text="<image>What is in the picture?", images=[image], suffix="A red circle.", return_tensors="pt")
    assert ids == hf["input_ids"][0].tolist()
    assert labels == hf["labels"][0].tolist()
    inputs = plugin.mm_inputs([image], [], [], proc, input_ids=[ids], labels=[labels])
    assert same(inputs["token_type_ids"], hf["token_type_ids"]) and same(inputs["pixel_values"], hf["pixel_values"])
    prompt_only = plugin.mm_inputs([image], [], [], proc, input_ids=[ids])  # at inference: all prefix
    assert prompt_only["token_type_ids"].sum() == 0


def test_mllama_batches_images_per_example_as_the_processor_does():
    proc = processor("mllama")
    plugin = get_mm_plugin("mllama")
    bos = proc.tokenizer.bos_token
    a, b, c = picture((40, 60)), picture((60, 30)), picture((33, 33))
    texts = [f"{bos}<|image|><|image|>Two pictures, then words.", f"{bos}<|image|>One picture."]
    hf = proc(text=texts, images=[[a, b], [c]], padding=True, add_special_tokens=False, return_tensors="pt")
    inputs = plugin.mm_inputs([a, b, c], [], [], proc, counts=[(2, 0, 0), (1, 0, 0)], input_ids=hf["input_ids"])
    for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"):
        assert same(inputs[key], hf[key]), key
    # an example without images in the batch keeps its row, empty
    inputs = plugin.mm_inputs([c], [], [], proc, counts=[(0, 0, 0), (1, 0, 0)], input_ids=hf["input_ids"])
    assert inputs["pixel_values"].shape[:2] == (2, 1) and inputs["pixel_values"][0].abs().sum() == 0
    assert inputs["cross_attention_mask"][0].sum() == 0


def write_wav(path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(pcm, channels).tobytes())


def test_qwen2_audio_expansion_and_features_follow_the_processor(tmp_path):
    proc = processor("qwen2_audio")
    plugin = get_mm_plugin("qwen2_audio")
    path = tmp_path / "tone.wav"
    write_wav(path, tone(1.0, rate=8000), 8000, channels=2)  # resampled to 16 kHz, channels averaged
    audios = [tone(0.5), tone(1.3, hertz=220), tone(3.0), str(path)]  # 3 s is cut to the extractor's 2 s
    arrays = [load_audio(a, 16000) for a in audios]
    assert len(arrays[3]) == 16000
    messages = [{"role": "user", "content": "<audio>One.<audio>Two.<audio>Three.<audio>Four."}]
    expanded = plugin.expand_messages(messages, [], [], audios, proc)
    mark = "<|audio_bos|><|AUDIO|><|audio_eos|>"
    hf = proc(text=[f"{mark}One.{mark}Two.{mark}Three.{mark}Four."], audio=arrays, add_special_tokens=False,
              return_tensors="pt")
    ids = proc.tokenizer(expanded[0]["content"], add_special_tokens=False)["input_ids"]
    assert ids == hf["input_ids"][0].tolist()
    audio_id = proc.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert ids.count(audio_id) == 12 + 32 + 50 + 25  # 50, 130, 200 (cut) and 100 mel frames
    inputs = plugin.mm_inputs([], [], audios, proc)
    assert same(inputs["input_features"], hf["input_features"])
    assert same(inputs["feature_attention_mask"], hf["feature_attention_mask"])


# ------------------------------------------------------------------------------------- media forms
def test_every_image_form_gives_the_same_pixels(tmp_path):
    proc, plugin = processor("qwen2_vl"), get_mm_plugin("qwen2_vl")
    image = picture((64, 48))
    path = tmp_path / "p.png"
    image.save(path)
    data = path.read_bytes()
    forms = [image, str(path), path, data, {"path": str(path)}, {"bytes": data, "path": None},
             image.convert("RGBA")]
    reference = plugin.mm_inputs([image], [], [], proc)["pixel_values"]
    for form in forms:
        assert torch.equal(plugin.mm_inputs([form], [], [], proc)["pixel_values"], reference)
    with pytest.raises(TypeError):
        load_image(3)


def test_images_are_resized_into_the_pixel_limits():
    proc, plugin = fresh_processor("qwen2_vl"), get_mm_plugin("qwen2_vl")
    big, small = picture((200, 100)), picture((10, 10))
    default = plugin.mm_inputs([big], [], [], proc)["image_grid_thw"].prod()
    proc.image_max_pixels = 60 * 60
    assert plugin.mm_inputs([big], [], [], proc)["image_grid_thw"].prod() < default
    from llamafactory.data.mm_plugin import load_images

    resized = load_images([big, small], proc)
    assert resized[0].size[0] * resized[0].size[1] <= 60 * 60 and resized[0].size[0] == 2 * resized[0].size[1]
    assert resized[1].size[0] * resized[1].size[1] >= 32 * 32


def test_wav_reading_with_the_standard_library(tmp_path, monkeypatch):
    samples = tone(0.25, rate=16000)
    path = tmp_path / "a.wav"
    write_wav(path, samples, 16000)
    read = load_audio(str(path), 16000)
    assert np.abs(read - samples).max() < 1e-3
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(1)
        f.setframerate(8000)
        f.writeframes(((samples[::2] * 127) + 128).astype(np.uint8).tobytes())
    assert len(load_audio(buffer.getvalue(), 16000)) == 2 * len(samples[::2])
    assert len(load_audio({"array": tone(1.0, rate=8000), "sampling_rate": 8000}, 16000)) == 16000
    monkeypatch.setitem(sys.modules, "soundfile", None)  # soundfile missing: a ValueError saying what to install
    with pytest.raises(ValueError, match="pip install soundfile"):
        load_audio(str(tmp_path / "a.mp3"), 16000)
    with pytest.raises(ValueError, match="pip install soundfile"):
        load_audio(b"ID3 not a wav", 16000)
    with pytest.raises(ValueError, match="missing.wav"):
        load_audio(str(tmp_path / "missing.wav"), 16000)


# ------------------------------------------------------------------------------------- checks
def test_check_refuses_count_mismatches_and_unsupported_media(monkeypatch):
    image = picture((40, 40))
    llava = get_mm_plugin("llava")
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        llava.check([{"role": "user", "content": "<image><image>Hi"}], [image], [], [])
    with pytest.raises(ValueError, match="0 <image> placeholder"):
        llava.check([{"role": "user", "content": "Hi"}], [image], [], [])
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        llava.check([{"role": "user", "content": "<image>Hi"}], [], [], [])
    with pytest.raises(ValueError, match="takes no audios"):
        llava.check([{"role": "user", "content": "<audio>Hi"}], [], [], [tone(0.1)])
    with pytest.raises(ValueError, match="takes no images"):
        get_mm_plugin("base").check([{"role": "user", "content": "<image>Hi"}], [image], [], [])
    with pytest.raises(ValueError, match="takes no images"):
        get_mm_plugin("base").expand_messages([{"role": "user", "content": "<image>"}], [image], [], [], None)
    with pytest.raises(ValueError, match="needs the model's processor"):
        llava.expand_messages([{"role": "user", "content": "<image>Hi"}], [image], [], [], None)
    # text only: the base plugin leaves text (and a stray "<image>") alone
    messages = [{"role": "user", "content": "<image> is a tag"}]
    assert get_mm_plugin("base").expand_messages(messages, [], [], [], None) is messages
    assert get_mm_plugin(None).name == "base"
    with pytest.raises(ValueError, match="unknown multimodal plugin"):
        get_mm_plugin("nope")
    # the placeholder text comes from the environment
    monkeypatch.setenv("IMAGE_PLACEHOLDER", "[img]")
    proc = processor("llava")
    out = llava.expand_messages([{"role": "user", "content": "[img]Hi <image>"}], [image], [], [], proc)
    assert out[0]["content"] == "<image>" * 4 + "Hi <image>"


@pytest.mark.parametrize("family", FAMILIES)
def test_media_token_ids_cover_the_expanded_media_tokens(family):
    proc = processor(family)
    tok = proc.tokenizer
    plugin = get_mm_plugin(family)
    if family == "qwen2_audio":
        content, media = "<audio>Hear this.", {"audios": [tone(0.5)]}
    else:
        content, media = "<image>See this.", {"images": [picture((40, 60))]}
    expanded = plugin.expand_messages([{"role": "user", "content": content}], media.get("images", []), [],
                                      media.get("audios", []), proc)[0]["content"]
    ids = tok(expanded, add_special_tokens=False)["input_ids"]
    ids, _ = plugin.expand_ids(ids, None, media.get("images", []), [], media.get("audios", []), tok, proc)
    special = {i for i in ids if tok.convert_ids_to_tokens(i) in tok.all_special_tokens}
    media_ids = plugin.media_token_ids(tok)
    assert special - {tok.bos_token_id} <= media_ids  # every special token in the expansion is a media one
    assert not media_ids & set(tok("See this. Hear this.", add_special_tokens=False)["input_ids"])
    assert get_mm_plugin("base").media_token_ids(tok) == set()


# ------------------------------------------------------------------------------------- through the models
def encode(family: str, messages: list[dict], images: list, audios: list, proc) -> tuple[list[int], list[int]]:
    plugin, template = get_mm_plugin(family), get_template(family)
    expanded = plugin.expand_messages(messages, images, [], audios, proc)
    ids, labels = [], []
    for prompt, answer in template.encode_multiturn(proc.tokenizer, expanded):
        ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
    return plugin.expand_ids(ids, labels, images, [], audios, proc.tokenizer, proc)


@pytest.mark.parametrize("family", FAMILIES)
def test_mm_inputs_run_through_the_tiny_models_forward(family):
    proc = processor(family)
    tok = proc.tokenizer
    plugin = get_mm_plugin(family)
    model = build_model(family, tok)
    if family == "qwen2_audio":
        mark, media = "<audio>", [[tone(0.5)], [tone(1.0), tone(0.3, hertz=300)]]
    else:
        mark, media = "<image>", [[picture((40, 60))], [picture((60, 30)), picture((33, 50), (30, 200, 30))]]
    rows = [encode(family, [{"role": "user", "content": mark * len(items) + "What is it?"},
                            {"role": "assistant", "content": "A red circle."}],
                   items if mark == "<image>" else [], items if mark == "<audio>" else [], proc)
            for items in media]
    media_ids = plugin.media_token_ids(tok)
    for ids, labels in rows:
        assert all(label == IGNORE_INDEX for i, label in zip(ids, labels) if i in media_ids)
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    flat = [item for items in media for item in items]
    counts = [(len(items), 0, 0) if mark == "<image>" else (0, 0, len(items)) for items in media]
    inputs = plugin.mm_inputs(flat if mark == "<image>" else [], [], flat if mark == "<audio>" else [], proc,
                              counts=counts, input_ids=input_ids, labels=labels)
    with torch.no_grad():
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels, **inputs).loss
    assert torch.isfinite(loss) and loss > 0


# ------------------------------------------------------------------------------------- videos
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_video_frames_become_temporal_patches_the_model_reads(family, tmp_path):
    proc = processor(family)
    tok = proc.tokenizer
    plugin = get_mm_plugin(family)
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)) for _ in range(3)]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"{i}.png"))
        frame.save(paths[-1])
    # layout: a video of the same frame twice is that frame as an image; a 2-frame video stacks the frames
    image = plugin.mm_inputs([frames[0]], [], [], proc)["pixel_values"]
    assert torch.equal(plugin.mm_inputs([], [[frames[0], frames[0]]], [], proc)["pixel_values_videos"], image)
    pair = plugin.mm_inputs([], [frames[:2]], [], proc)["pixel_values_videos"]
    patch, temporal = proc.image_processor.patch_size, proc.image_processor.temporal_patch_size
    pair = pair.reshape(pair.shape[0], 3, temporal, patch, patch)
    second = plugin.mm_inputs([frames[1]], [], [], proc)["pixel_values"].reshape(pair.shape)
    assert torch.equal(pair[:, :, 0], image.reshape(pair.shape)[:, :, 0]) and torch.equal(pair[:, :, 1],
                                                                                          second[:, :, 1])
    # 3 frames (paths) are padded to 4: 2 temporal patches; the token count is what the vision tower returns
    messages = [{"role": "user", "content": "<video>What happens?<image>"},
                {"role": "assistant", "content": "A red circle."}]
    ids, labels = encode_video(family, messages, [frames[0]], [paths], proc)
    inputs = plugin.mm_inputs([frames[0]], [paths], [], proc, input_ids=[ids], labels=[labels])
    grid = inputs["video_grid_thw"][0].tolist()
    merge = proc.image_processor.merge_size ** 2
    assert grid[0] == 2 and inputs["pixel_values_videos"].shape[0] == math.prod(grid)
    video_id = tok.convert_tokens_to_ids("<|video_pad|>")
    assert ids.count(video_id) == math.prod(grid) // merge
    text = tok.decode(ids)
    if family == "qwen3_vl":  # a timestamp before each temporal patch (frames at video_fps = 2)
        assert "<0.2 seconds><|vision_start|><|video_pad|>" in text and "<1.0 seconds><|vision_start|>" in text
    else:
        assert "seconds" not in text
    model = build_model(family, tok)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), **inputs).loss
    assert torch.isfinite(loss)


def encode_video(family, messages, images, videos, proc):
    plugin, template = get_mm_plugin(family), get_template(family)
    expanded = plugin.expand_messages(messages, images, videos, [], proc)
    ids, labels = [], []
    for prompt, answer in template.encode_multiturn(proc.tokenizer, expanded):
        ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
    return ids, labels


def test_video_sampling_limits_and_files(monkeypatch):
    proc = fresh_processor("qwen2_vl")
    proc.video_maxlen = 4
    frames = [picture((40, 40), (i * 20, 0, 0)) for i in range(10)]
    kept, fps, seconds = load_video(frames, proc)
    # 10 frames at video_fps = 2 span 5 s; 4 kept at an even stride of 2.5 frames (1.25 s): 0.8 frames a second
    assert len(kept) == 4 and seconds == [0.0, 1.0, 2.5, 3.5] and fps == 0.8
    assert [f.getpixel((20, 20))[0] for f in kept] == [0, 40, 100, 140]  # which frames
    assert load_video(frames[:3], proc) == (frames[:3], 2.0, [0.0, 0.5, 1.0])  # under the cap: all, at video_fps
    with pytest.raises(ValueError, match="no frames"):
        load_video([], proc)
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV missing
    with pytest.raises(ValueError, match="pip install av"):
        load_video("clip.mp4", proc)
    with pytest.raises(ValueError, match="takes no videos"):
        get_mm_plugin("llava").check([{"role": "user", "content": "<video>"}], [], [frames], [])


def test_every_family_has_a_plugin():
    assert set(FAMILIES) | {"base"} == set(PLUGINS)


def test_qwen2_5_vl_video_gets_seconds_per_temporal_patch(tmp_path):
    """Qwen2.5-VL (the qwen2_vl plugin) also takes second_per_grid_ts, which its M-RoPE spaces frames by."""
    import json

    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from tests.mm_models import TEXT

    proc = qwen2_5_vl_processor()
    tok = proc.tokenizer
    names = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    config = Qwen2_5_VLConfig(
        text_config={**TEXT, "vocab_size": len(tok), "eos_token_id": 0, "pad_token_id": 0, "bos_token_id": None,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [0]},
        tie_word_embeddings=False, **{k: tok.convert_tokens_to_ids(v) for k, v in names.items()})
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        picture((56, 84), (i * 50, 0, 0)).save(paths[-1])
    video = json.dumps(paths)  # a video's frames as converter.py stores them
    messages = [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "It moves."}]
    ids, labels = encode_video("qwen2_vl", messages, [], [video], proc)
    inputs = get_mm_plugin("qwen2_vl").mm_inputs([], [video], [], proc, input_ids=[ids], labels=[labels])
    assert inputs["second_per_grid_ts"].tolist() == [1.0]  # temporal patch of 2 frames at video_fps = 2
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), **inputs).loss
    assert torch.isfinite(loss)


def qwen2_5_vl_processor():
    """Qwen2.5-VL's processor (the qwen2_vl plugin; its model takes `second_per_grid_ts`) without torchvision."""
    from transformers import Qwen2_5_VLProcessor

    from llamafactory.model.model_utils.visual import processor_without_video
    from tests.mm_models import _image_processor, build_tokenizer

    return processor_without_video(Qwen2_5_VLProcessor, image_processor=_image_processor("qwen2_vl"),
                                   tokenizer=build_tokenizer("qwen2_vl"))


# ------------------------------------------------------------------------------------- video files (a fake PyAV)
class FakeAV:
    """Stands in for PyAV: a video of `total` frames at `rate` fps that reports its frame count, only its duration,
    or neither; counts the frames decoded and the frames converted to images."""

    def __init__(self, total: int = 60, rate: int = 30, report: str | None = "frames", fail: bool = False):
        self.total, self.rate, self.report, self.fail = total, rate, report, fail
        self.decoded = self.converted = self.opened = 0
        self.error = types.SimpleNamespace(FFmpegError=type("FFmpegError", (Exception,), {}))

    def open(self, source):
        self.opened += 1
        if self.fail:
            raise self.error.FFmpegError("Invalid data found when processing input")
        fake = self
        stream = types.SimpleNamespace(
            average_rate=Fraction(self.rate), time_base=Fraction(1, 1000),
            frames=self.total if self.report == "frames" else 0,
            duration=self.total * 1000 // self.rate if self.report == "duration" else None)

        class Frame:
            def __init__(self, i):
                self.i = i

            def to_image(self):
                fake.converted += 1
                return Image.new("RGB", (112, 84), (self.i % 256, 0, 0))

        class Container:
            streams = types.SimpleNamespace(video=[stream])
            duration = None

            def decode(self, video_stream):
                assert video_stream is stream
                for i in range(fake.total):
                    fake.decoded += 1
                    yield Frame(i)

            def __enter__(self):
                return self

            def __exit__(self, *args):
                return False

        return Container()


@pytest.mark.parametrize("report", ["frames", "duration", None])
def test_only_the_sampled_frames_of_a_video_file_are_converted(report, monkeypatch):
    """10 s at 30 fps sampled at video_fps = 2: 20 frames converted, whether the container reports its frame count,
    only its duration, or neither (then it is decoded once to count, without converting)."""
    fake = FakeAV(total=300, rate=30, report=report)
    monkeypatch.setitem(sys.modules, "av", fake)
    proc = fresh_processor("qwen2_vl")
    video = load_video("clip.mp4", proc)
    assert len(video.frames) == 20 and fake.converted == 20
    assert video.fps == 2.0 and video.timestamps == [i / 2 for i in range(20)]
    assert [f.getpixel((0, 0))[0] for f in video.frames[:3]] == [0, 15, 30]  # frames 0, 15, 30 of the source
    assert fake.decoded == (300 + 286 if report is None else 286)  # stops after the last kept frame (285)
    proc.video_maxlen = 4  # capped: 4 frames 2.5 s apart
    fake.converted = 0
    video = load_video("clip.mp4", proc)
    assert fake.converted == 4 and video.timestamps == [0.0, 2.5, 5.0, 7.5] and video.fps == 0.4
    assert video.frames[0].size == video.frames[-1].size


def test_qwen2_5_vl_seconds_per_temporal_patch_follow_the_sampled_rate(monkeypatch):
    """second_per_grid_ts is temporal_patch_size / the kept frames' rate: not the file's own 30 fps, and slower
    than video_fps when video_maxlen thins a frame list."""
    monkeypatch.setitem(sys.modules, "av", FakeAV(total=60, rate=30, report=None))
    proc, plugin = qwen2_5_vl_processor(), get_mm_plugin("qwen2_vl")
    out = plugin.mm_inputs([], ["clip.mp4"], [], proc)  # 2 s: 4 frames at 2 fps, 2 temporal patches
    assert out["video_grid_thw"][0, 0] == 2 and out["second_per_grid_ts"].tolist() == [1.0]
    proc.video_maxlen = 4
    frames = [picture((56, 56), (i * 20, 0, 0)) for i in range(10)]  # 5 s at video_fps; 4 kept, 1.25 s apart
    out = plugin.mm_inputs([], [frames, "clip.mp4"], [], proc)
    assert out["second_per_grid_ts"].tolist() == [2.5, 1.0]


def test_qwen3_vl_timestamps_are_the_sampled_frames_seconds(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", FakeAV(total=90, rate=30, report="frames"))  # 3 s: frames at 0 .. 2.5 s
    proc, plugin = processor("qwen3_vl"), get_mm_plugin("qwen3_vl")
    text = plugin.expand_messages([{"role": "user", "content": "<video>"}], [], ["clip.mp4"], [], proc)[0]["content"]
    assert re.findall(r"<([0-9.]+) seconds>", text) == ["0.2", "1.2", "2.2"]  # middles of 0/0.5, 1/1.5, 2/2.5


def test_unreadable_video_files_are_value_errors(monkeypatch):
    proc = processor("qwen2_vl")
    monkeypatch.setitem(sys.modules, "av", FakeAV(fail=True))
    with pytest.raises(ValueError, match="cannot decode video `broken.mp4`: Invalid data"):
        load_video("broken.mp4", proc)
    with pytest.raises(ValueError, match=r"\(5 bytes of data\)"):
        load_video({"bytes": b"12345"}, proc)
    empty = FakeAV(total=0, report="frames")
    monkeypatch.setitem(sys.modules, "av", empty)
    with pytest.raises(ValueError, match="no frames"):
        load_video("empty.mp4", proc)


# ------------------------------------------------------------------------------------- unreadable images
def test_unreadable_images_are_value_errors_naming_the_source(tmp_path, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read image `.*bad.png`"):
        load_image(str(bad))
    with pytest.raises(ValueError, match=r"cannot read image \(4 bytes of data\)"):
        load_image(b"\x89PNG")
    with pytest.raises(ValueError, match="missing.png"):
        load_image({"path": str(tmp_path / "missing.png")})
    truncated = io.BytesIO()
    picture((64, 64)).save(truncated, format="PNG")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(truncated.getvalue()[:-40])
    big = tmp_path / "big.png"
    picture((60, 60)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 pixels: over twice the limit is a bomb
    with pytest.raises(ValueError, match="big.png.*decompression bomb"):
        load_image(str(big))
    with pytest.raises(ValueError, match="decompression bomb"):
        get_mm_plugin("qwen2_vl").mm_inputs([str(big)], [], [], processor("qwen2_vl"))


# ------------------------------------------------------------------------------------- PaliGemma token types
def paligemma_rows(turns: list[tuple[str, str]], train_on_prompt: bool, mask_history: bool = False):
    """(input_ids, labels) as processor/supervised.py builds them for the paligemma template."""
    proc = processor("paligemma")
    plugin, template = get_mm_plugin("paligemma"), get_template("paligemma")
    image = picture((50, 40))
    messages = []
    for prompt, answer in turns:
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    messages[0] = {"role": "user", "content": "<image>" + messages[0]["content"]}
    expanded = plugin.expand_messages(messages, [image], [], [], proc)
    ids, labels = [], []
    pairs = template.encode_multiturn(proc.tokenizer, expanded)
    for i, (prompt, answer) in enumerate(pairs):
        trained = not mask_history or i == len(pairs) - 1
        ids += prompt + answer
        labels += (prompt if train_on_prompt and trained else [IGNORE_INDEX] * len(prompt))
        labels += answer if trained else [IGNORE_INDEX] * len(answer)
    return plugin.expand_ids(ids, labels, [image], [], [], proc.tokenizer, proc), image


def paligemma_types(rows, images) -> torch.Tensor:
    proc, tok = processor("paligemma"), processor("paligemma").tokenizer
    width = max(len(ids) for ids, _ in rows)
    input_ids = [ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in rows]
    labels = [lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows]
    return get_mm_plugin("paligemma").mm_inputs(images, [], [], proc, input_ids=input_ids,
                                                labels=labels)["token_type_ids"]


def test_paligemma_token_types_do_not_depend_on_train_on_prompt():
    """The prefix is the prompt whether or not the prompt is trained (train_on_prompt used to make it start at
    <bos>), and both match PaliGemma's processor, padding included."""
    proc = processor("paligemma")
    short = ("What is it?", "A circle.")
    long_ = ("Describe the picture in detail.", "A red circle on blue.\nIt is round.")  # a newline in the answer
    for train_on_prompt in (False, True):
        (a, image), (b, _) = paligemma_rows([short], train_on_prompt), paligemma_rows([long_], train_on_prompt)
        hf = proc(text=["<image>" + short[0], "<image>" + long_[0]], images=[image, image],
                  suffix=[short[1], long_[1]], padding="longest", return_tensors="pt")
        assert [ids for ids, _ in (a, b)] == [row[mask == 1].tolist()
                                              for row, mask in zip(hf["input_ids"], hf["attention_mask"])]
        types = paligemma_types([a, b], [image, image])
        assert same(types, hf["token_type_ids"]), train_on_prompt
        assert types[0].sum() == len(proc.tokenizer(short[1], add_special_tokens=False)["input_ids"]) + 1  # + eos


def test_paligemma_token_types_with_a_multiline_prompt_and_masked_history():
    proc = processor("paligemma")
    # a masked prompt with newlines of its own: the labels give the exact boundary, as the processor's
    (ids, labels), image = paligemma_rows([("Line one.\nLine two?", "Yes.")], train_on_prompt=False)
    hf = proc(text="<image>Line one.\nLine two?", images=[image], suffix="Yes.", return_tensors="pt")
    assert ids == hf["input_ids"][0].tolist()
    assert same(paligemma_types([(ids, labels)], [image]), hf["token_type_ids"])
    # mask_history: only the last turn is trained; its answer starts the suffix with or without its prompt trained
    turns = [("What is it?", "A circle."), ("What colour?", "Red.")]
    off, _ = paligemma_rows(turns, train_on_prompt=False, mask_history=True)
    on, _ = paligemma_rows(turns, train_on_prompt=True, mask_history=True)
    types_off, types_on = paligemma_types([off], [image]), paligemma_types([on], [image])
    assert torch.equal(types_off, types_on)
    answer = len(proc.tokenizer("Red.", add_special_tokens=False)["input_ids"]) + 1
    assert types_off[0, -answer:].tolist() == [1] * answer and types_off.sum() == answer
