"""The multimodal data pipeline: media columns -> converter (paths, errors) -> processors (expansion, masking,
truncation) -> collator (media tensors, M-RoPE positions, the dummy image for media-free batches)."""

import base64
import functools
import http.server
import json
import logging
import math
import os
import re
import struct
import threading
import wave

import pytest

from llamafactory.data.collator import build_collator
from llamafactory.data.loader import get_dataset
from llamafactory.data.processor.feedback import FeedbackProcessor
from llamafactory.data.processor.pairwise import PairwiseProcessor
from llamafactory.data.template import get_template
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.extras.errors import ConfigError, NotBuiltError
from tests.conftest import IDENTITY, write_dataset
from tests.mm_models import build_model, build_processor

SHAREGPT = {"formatting": "sharegpt", "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                               "assistant_tag": "assistant"}}
IMAGE_TOKEN = {"llava": "<image>", "llava_next": "<image>", "qwen2_vl": "<|image_pad|>", "qwen3_vl": "<|image_pad|>",
               "gemma3": "<image_soft_token>", "paligemma": "<image>", "mllama": "<|image|>",
               "qwen2_audio": "<|AUDIO|>"}


def turn(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def write_images(folder) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    Image.new("RGB", (56, 56), "red").save(os.path.join(folder, "red.png"))
    Image.new("RGB", (40, 60), "blue").save(os.path.join(folder, "blue.png"))
    for i in range(4):  # a short "video" given as frames
        Image.new("RGB", (56, 56), (60 * i, 0, 0)).save(os.path.join(folder, f"frame_{i}.png"))


def write_tone(path: str, seconds: float = 1.0, rate: int = 16000) -> None:
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        samples = (int(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        f.writeframes(b"".join(struct.pack("<h", s) for s in samples))


IMAGE_ROWS = [
    {"messages": turn("<image>What colour is it?", "It is red."), "images": ["red.png"]},
    {"messages": turn("<image>And this one?", "It is blue."), "images": ["blue.png"]},
    {"messages": turn("Who are you?", "I am Lumen.")},
]


def mm_dataset(folder, rows=IMAGE_ROWS, columns=None, **entry) -> str:
    columns = columns or {"messages": "messages", "images": "images"}
    return write_dataset(str(folder), rows, name="mm", file_name="mm.json",
                         entry={**SHAREGPT, "columns": columns, **entry})


def args(tmp_path, folder, dataset="mm", **data):
    from transformers import Seq2SeqTrainingArguments

    from llamafactory.hparams import DataArguments, ModelArguments

    model_args = ModelArguments(model_name_or_path="unused", cache_dir=str(tmp_path / "hf-cache"))
    values = dict(dataset=dataset, dataset_dir=str(folder), cutoff_len=256, overwrite_cache=True)
    values.update(data)
    training = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    return model_args, DataArguments(**values), training


@functools.cache
def processor_for(family: str):
    return build_processor(family)


@functools.cache
def model_for(family: str):
    return build_model(family, processor_for(family).tokenizer)


def load(tmp_path, folder, family="qwen2_vl", stage="sft", **data):
    processor = processor_for(family)
    module = get_dataset(get_template(family), *args(tmp_path, folder, **data), stage, processor.tokenizer,
                         processor=processor)
    return module["train_dataset"]


# ------------------------------------------------------------------------------------------------ tokenizing
@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_images_expand_into_the_processors_tokens_and_labels_mask_them(tmp_path, family):
    from PIL import Image

    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    train = load(tmp_path, folder, family)
    assert train.column_names == ["input_ids", "attention_mask", "labels", "images", "videos", "audios"]
    assert train["images"] == [[str(folder / "red.png")], [str(folder / "blue.png")], []]
    processor = processor_for(family)
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[family])
    for row, name in zip(train, ("red.png", "blue.png")):
        # the Hugging Face processor's own expansion of one image is the reference
        expected = processor(text=IMAGE_TOKEN[family], images=[Image.open(folder / name)])["input_ids"][0]
        assert row["input_ids"].count(image_id) == list(expected).count(image_id) > 1
        media = [i for i, t in enumerate(row["input_ids"]) if t in {image_id}]
        assert all(row["labels"][i] == IGNORE_INDEX for i in media)
        answer = processor.tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])
        assert answer.strip().startswith("It is")
    assert image_id not in train[2]["input_ids"]


def test_media_tokens_stay_masked_with_train_on_prompt(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    train = load(tmp_path, folder, "qwen2_vl", train_on_prompt=True)
    tokenizer = processor_for("qwen2_vl").tokenizer
    media = {tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")}
    row = train[0]
    assert any(t in media for t in row["input_ids"])
    assert all(label == IGNORE_INDEX for t, label in zip(row["input_ids"], row["labels"]) if t in media)
    assert any(label != IGNORE_INDEX for t, label in zip(row["input_ids"], row["labels"]) if t not in media)


def test_text_only_datasets_keep_todays_columns(tmp_path, tiny_tokenizer):
    folder = write_dataset(str(tmp_path / "data"), IDENTITY)
    module = get_dataset(get_template("chatml"), *args(tmp_path, folder, dataset="identity"), "sft", tiny_tokenizer)
    assert module["train_dataset"].column_names == ["input_ids", "attention_mask", "labels"]


def test_text_template_refuses_media(tmp_path, tiny_tokenizer):
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    with pytest.raises(ConfigError, match="template `chatml` is text-only but the data holds images"):
        get_dataset(get_template("chatml"), *args(tmp_path, folder), "sft", tiny_tokenizer)


def test_placeholder_media_mismatch_names_dataset_file_and_row(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    rows = [IMAGE_ROWS[0], {"messages": turn("<image><image>Compare them.", "Same."), "images": ["red.png"]}]
    mm_dataset(folder, rows)
    with pytest.raises(ConfigError, match=r"dataset `mm` \(.*mm\.json\), row 1: 2 `<image>` placeholder\(s\) in the "
                                          r"messages but 1 images"):
        load(tmp_path, folder)


@pytest.mark.parametrize("row,words", [
    ({"messages": turn("<image>What is <|image_pad|> here?", "A."), "images": ["red.png"]},
     "message 0 holds `<|image_pad|>`, one of the model's media tokens, as text"),
    ({"messages": [{"role": "system", "content": "Look at <image> first."}, *turn("<image>What?", "A.")],
      "images": ["red.png"]}, "the system prompt or tools text holds `<image>`"),
])
def test_media_tokens_typed_as_text_are_refused_with_the_row(tmp_path, row, words):
    """Typed media tokens (or a placeholder in the system prompt, which is never expanded) would give the model
    media tokens without features: the run stops there, naming the row, instead of failing in the forward."""
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder, [IMAGE_ROWS[0], row])
    with pytest.raises(ConfigError, match=r"row 1 .*" + re.escape(words)):
        load(tmp_path, folder)


def test_missing_media_file_names_row_and_path(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder, [IMAGE_ROWS[0], {"messages": turn("<image>What?", "A."), "images": ["gone.png"]}])
    with pytest.raises(ConfigError, match=r"row 1: image file `.*gone\.png` not found \(relative paths are "
                                          r"resolved against media_dir"):
        load(tmp_path, folder)


def test_media_dir_resolves_relative_paths(tmp_path):
    folder, media = tmp_path / "data", tmp_path / "media"
    write_images(media)
    mm_dataset(folder)
    with pytest.raises(ConfigError, match="image file .* not found"):  # default: relative to dataset_dir
        load(tmp_path, folder)
    train = load(tmp_path, folder, media_dir=str(media))
    assert train["images"][:2] == [[str(media / "red.png")], [str(media / "blue.png")]]


@pytest.fixture
def http_folder(tmp_path):
    """A localhost web server over a folder of images (no internet needed)."""
    served = tmp_path / "served"
    write_images(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_refused_unless_enabled(tmp_path, http_folder):
    served, base = http_folder
    folder = tmp_path / "data"
    mm_dataset(folder, [{"messages": turn("<image>What colour is it?", "Red."), "images": [f"{base}/red.png"]}])
    with pytest.raises(ConfigError, match="row 0: image `http://127.0.0.1.*red.png` is a URL; set "
                                          "`media_allow_urls: true`"):
        load(tmp_path, folder)
    train = load(tmp_path, folder, media_allow_urls=True)
    path = train["images"][0][0]
    assert path.startswith(str(tmp_path / "hf-cache")) and os.path.isfile(path)  # downloaded into the cache
    assert open(path, "rb").read() == (served / "red.png").read_bytes()


def test_openai_content_parts_become_placeholders_and_media(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    png = base64.b64encode((folder / "blue.png").read_bytes()).decode()
    rows = [{"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "red.png"}},
                                     {"type": "text", "text": "Compare with"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]},
        {"role": "assistant", "content": "Red, then blue."}]}]
    write_dataset(str(folder), rows, name="mm", file_name="mm.json", entry={"formatting": "openai"})
    train = load(tmp_path, folder)
    first, second = train["images"][0]
    assert first == str(folder / "red.png")
    assert open(second, "rb").read() == (folder / "blue.png").read_bytes()  # the data URL, decoded once
    tokenizer = processor_for("qwen2_vl").tokenizer
    text = tokenizer.decode(train[0]["input_ids"])
    assert text.count("<|vision_start|>") == 2 and "Compare with" in text


def test_videos_as_frame_lists_and_audio_files(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    rows = [{"messages": turn("<video>Which way does it move?", "Right."), "videos": [[f"frame_{i}.png"
                                                                                          for i in range(4)]]}]
    mm_dataset(folder, rows, columns={"messages": "messages", "videos": "videos"})
    train = load(tmp_path, folder, "qwen2_vl")
    assert json.loads(train["videos"][0][0]) == [str(folder / f"frame_{i}.png") for i in range(4)]
    video_id = processor_for("qwen2_vl").tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert train[0]["input_ids"].count(video_id) > 0
    batch = build_collator(processor_for("qwen2_vl").tokenizer, model_for("qwen2_vl"), template=get_template(
        "qwen2_vl"), processor=processor_for("qwen2_vl"))([train[0]])
    assert batch["video_grid_thw"].tolist()[0][0] == 2  # 4 frames, 2 per temporal patch
    assert batch["pixel_values_videos"].shape[0] == int(batch["video_grid_thw"].prod())

    audio_folder = tmp_path / "audio"
    os.makedirs(audio_folder)
    write_tone(str(audio_folder / "tone.wav"))
    rows = [{"messages": turn("<audio>What do you hear?", "A tone."), "audios": ["tone.wav"]}]
    mm_dataset(audio_folder, rows, columns={"messages": "messages", "audios": "audios"})
    train = load(tmp_path, audio_folder, "qwen2_audio")
    audio_id = processor_for("qwen2_audio").tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert train["audios"] == [[str(audio_folder / "tone.wav")]]
    assert train[0]["input_ids"].count(audio_id) == 25  # 1 s at 16 kHz: 100 frames -> 50 -> 25 tokens
    assert all(label == IGNORE_INDEX for t, label in zip(train[0]["input_ids"], train[0]["labels"]) if t == audio_id)


def test_truncation_never_cuts_media_and_counts_the_dropped_rows(tmp_path, caplog):
    folder = tmp_path / "data"
    write_images(folder)
    long = "describe this image in detail " * 8
    rows = [{"messages": turn(long + "<image>", "It is red."), "images": ["red.png"]},  # cut inside the image
            {"messages": turn("<image>What?", "It is blue."), "images": ["blue.png"]},
            {"messages": turn(long + "What?", "It is text only.")}]  # text is truncated as before, not dropped
    mm_dataset(folder, rows)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        train = load(tmp_path, folder, cutoff_len=40)
    assert "Dropped 1 of 3 training examples: cutoff_len (40) would cut inside their image/video/audio" in caplog.text
    assert train["images"] == [[str(folder / "blue.png")], []]
    assert all(len(ids) <= 40 for ids in train["input_ids"])
    # prompts for generation (predict) keep their end, so there the image must not open a long prompt
    rows[0]["messages"] = turn("<image>" + long, "It is red.")
    mm_dataset(folder, rows)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        predict = load(tmp_path, folder, stage="predict", cutoff_len=40)
    assert "Dropped 1 of 3 training examples" in caplog.text
    assert predict["images"] == [[str(folder / "blue.png")], []]


def test_ranking_and_kto_stages_refuse_media(tiny_tokenizer):
    from types import SimpleNamespace

    rows = {"_prompt": [turn("<image>Which?", "")[:1]], "_response": [turn("A", "B")[1:] * 2],
            "_system": [""], "_tools": [""], "_kto_tag": [True], "_images": [["/x.png"]]}
    data_args = SimpleNamespace(cutoff_len=64, train_on_prompt=False, mask_history=False)
    with pytest.raises(NotBuiltError, match="stage `rm/dpo` does not train on images"):
        PairwiseProcessor(get_template("chatml"), tiny_tokenizer, data_args).preprocess(rows)
    with pytest.raises(NotBuiltError, match="stage `kto` does not train on images"):
        FeedbackProcessor(get_template("chatml"), tiny_tokenizer, data_args).preprocess(rows)


# ------------------------------------------------------------------------------------------------ batching
FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen3_vl", "gemma3", "paligemma", "mllama")


@pytest.mark.parametrize("family", FAMILIES)
def test_collated_batches_train_the_tiny_model(tmp_path, family):
    import torch

    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    train = load(tmp_path, folder, family)
    processor, model = processor_for(family), model_for(family)
    collate = build_collator(processor.tokenizer, model, template=get_template(family), processor=processor)
    batch = collate([train[i] for i in range(3)])
    assert "pixel_values" in batch and batch["input_ids"].shape[0] == 3
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_qwen2_vl_position_ids_are_mrope(tmp_path):
    import torch

    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    train = load(tmp_path, folder, "qwen2_vl")
    processor, model = processor_for("qwen2_vl"), model_for("qwen2_vl")
    collate = build_collator(processor.tokenizer, model, template=get_template("qwen2_vl"), processor=processor)
    batch = collate([train[i] for i in range(3)])
    batch_size, length = batch["input_ids"].shape
    assert batch["position_ids"].shape == (3, batch_size, length)
    # row 0: text, then the 56x56 red image (a 4x4 patch grid merged 2x2: 4 tokens), then text
    image = (batch["mm_token_type_ids"][0] == 1).nonzero().flatten().tolist()
    assert len(image) == 4 and image == list(range(image[0], image[0] + 4))
    start = image[0]
    positions = batch["position_ids"][:, 0]
    assert positions[:, :start].tolist() == [list(range(start))] * 3  # text: the same position on all 3 axes
    assert positions[:, start:start + 4].tolist() == [[start] * 4, [start, start, start + 1, start + 1],
                                                      [start, start + 1, start, start + 1]]  # (t, h, w) grid
    assert positions[:, start + 4].tolist() == [start + 2] * 3  # text resumes after the grid's largest side
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def media_rows_for(tmp_path, family):
    folder = tmp_path / "media-data"
    if family == "qwen2_audio":
        os.makedirs(folder, exist_ok=True)
        write_tone(str(folder / "tone.wav"))
        mm_dataset(folder, [{"messages": turn("<audio>What is it?", "A tone."), "audios": ["tone.wav"]}],
                   columns={"messages": "messages", "audios": "audios"})
    else:
        write_images(folder)
        mm_dataset(folder, IMAGE_ROWS[:2])
    train = load(tmp_path, folder, family)
    return [train[i] for i in range(len(train))]


@pytest.mark.parametrize("family", [*FAMILIES, "qwen2_audio"])
def test_text_only_batch_gets_a_masked_dummy_so_the_tower_runs(tmp_path, family):
    import torch

    folder = tmp_path / "data"
    write_dataset(str(folder), IDENTITY)
    processor, model = processor_for(family), model_for(family)
    module = get_dataset(get_template(family), *args(tmp_path, folder, dataset="identity"), "sft",
                         processor.tokenizer, processor=processor)
    rows = [module["train_dataset"][i] for i in range(2)]
    collate = build_collator(processor.tokenizer, model, template=get_template(family), processor=processor)
    batch = collate(rows)
    media_key = "input_features" if family == "qwen2_audio" else "pixel_values"
    assert media_key in batch
    first = batch["input_ids"][0]
    dummy = (batch["attention_mask"][0] == 0) & (first != processor.tokenizer.pad_token_id)
    assert dummy.sum() > 0  # the dummy's tokens are there, masked from attention...
    assert (batch["labels"][0][dummy] == IGNORE_INDEX).all()  # ...and from the loss
    token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[family])
    assert (first[dummy] == token_id).any()

    def used(batch):  # the parameters a backward pass reaches
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        names = {name for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return loss.detach(), names

    loss, with_dummy = used(batch)
    media_rows = media_rows_for(tmp_path, family)
    _, with_media = used(collate(media_rows))
    tower = {name for name in with_media if any(k in name for k in ("vision", "visual", "audio"))}
    assert tower and with_dummy == with_media  # every rank reaches the same parameters, media or not
    model.zero_grad()
    if family in ("llava", "qwen2_vl", "qwen2_audio"):  # the dummy changes nothing the loss sees
        plain = build_collator(processor.tokenizer)(rows)
        with torch.no_grad():
            text_loss = model(**plain).loss
        torch.testing.assert_close(loss, text_loss, rtol=1e-5, atol=1e-5)


def test_generation_batches_get_a_masked_dummy_that_changes_nothing_generated(tmp_path):
    import torch

    folder = tmp_path / "data"
    write_dataset(str(folder), IDENTITY)
    processor, model = processor_for("llava"), model_for("llava")
    tokenizer, template = processor.tokenizer, get_template("llava")
    rows = get_dataset(template, *args(tmp_path, folder, dataset="identity"), "predict", tokenizer,
                       processor=processor)["train_dataset"]
    features = [rows[0], rows[1]]
    left = build_collator(tokenizer, model, padding_side="left", template=template, processor=processor)
    batch = left(features)
    plain = build_collator(tokenizer, padding_side="left")(features)  # what a text model's batch would be
    assert "pixel_values" in batch  # the vision tower runs on every rank (ZeRO-3), media or not
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    dummy = batch["input_ids"][0] == image_id
    assert dummy.sum() == 4 and (batch["attention_mask"][0][dummy] == 0).all()
    start = int(dummy.nonzero()[0])
    assert batch["input_ids"][0, start:].tolist()[4:] == rows[0]["input_ids"]  # before the prompt, which still
    assert batch["input_ids"][1, -len(rows[1]["input_ids"]):].tolist() == rows[1]["input_ids"]  # ends at the end
    assert batch["labels"].tolist() == plain["labels"].tolist()  # the references are left as they are
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        generated = model.generate(**{k: v for k, v in batch.items() if k != "labels"}, **settings)
        expected = model.generate(**{k: v for k, v in plain.items() if k != "labels"}, **settings)
    assert generated[:, batch["input_ids"].shape[1]:].tolist() == expected[:, plain["input_ids"].shape[1]:].tolist()

    mllama = processor_for("mllama")  # its image's span would run over the whole prompt: nothing may attend to it
    rows = get_dataset(get_template("mllama"), *args(tmp_path, folder, dataset="identity"), "predict",
                       mllama.tokenizer, processor=mllama)["train_dataset"]
    batch = build_collator(mllama.tokenizer, padding_side="left", template=get_template("mllama"),
                           processor=mllama)([rows[0], rows[1]])
    assert "pixel_values" in batch and batch["cross_attention_mask"].sum() == 0


def test_padding_free_is_off_for_multimodal_models():
    processor = processor_for("llava")
    collate = build_collator(processor.tokenizer, padding_free=True, template=get_template("llava"),
                             processor=processor)
    assert not collate.padding_free
    assert build_collator(processor.tokenizer, padding_free=True).padding_free  # text models keep it


def test_removed_media_columns_are_an_error_not_a_silent_text_batch(tmp_path):
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    train = load(tmp_path, folder, "llava")
    processor = processor_for("llava")
    collate = build_collator(processor.tokenizer, template=get_template("llava"), processor=processor)
    stripped = [{k: v for k, v in train[i].items() if k in ("input_ids", "attention_mask", "labels")}
                for i in range(2)]
    with pytest.raises(ConfigError, match="remove_unused_columns: false"):
        collate(stripped)


# ------------------------------------------------------------------------------------------------ review fixes
def test_text_only_model_on_a_multimodal_template_is_a_text_model(tmp_path, tiny_model_dir):
    """Gemma 3 1B (text only, no processor) uses the `gemma3` template: the plugin stays off without a processor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamafactory.data.template import get_template_and_fix_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # a fresh one: the template adds <end_of_turn>
    folder = write_dataset(str(tmp_path / "data"), IDENTITY)
    model_args, data_args, training = args(tmp_path, folder, dataset="identity", template="gemma3")
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    assert template.mm_plugin == "gemma3"
    train = get_dataset(template, model_args, data_args, training, "sft", tokenizer)["train_dataset"]
    assert train.column_names == ["input_ids", "attention_mask", "labels"]  # no media columns
    rows = [train[i] for i in range(3)]
    collate = build_collator(tokenizer, template=template, padding_free=True)
    assert collate.padding_free and collate.media is None
    assert "cu_seq_lens_q" in collate(rows)  # the Trainer's column removal leaves exactly these: a text batch
    padded = build_collator(tokenizer, template=template)(rows)
    assert "pixel_values" not in padded  # no dummy image for a model without a vision tower
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        assert torch.isfinite(model(**padded).loss)
    _, packing_args, _ = args(tmp_path, folder, dataset="identity", template="gemma3", packing=True)
    packed = get_dataset(template, model_args, packing_args, training, "sft", tokenizer)["train_dataset"]
    assert "position_ids" in packed.column_names and len(packed) < len(IDENTITY)

    write_images(folder)  # only a row that really holds media is refused, naming where it is
    mm_dataset(folder, [IMAGE_ROWS[2], IMAGE_ROWS[0]])
    with pytest.raises(ConfigError, match=r"dataset `mm` \(.*mm\.json\), row 1 \(images .*red\.png\): this row "
                                          r"holds images, videos or audios, but this model has no processor"):
        get_dataset(template, *args(tmp_path, folder), "sft", tokenizer)


def image_feature_dataset(folder, name="mm.parquet") -> bytes:
    """A parquet file whose images column is a datasets Image() feature holding JPEG bytes (the hub layout)."""
    import io

    from datasets import Dataset, Image, List
    from PIL import Image as PILImage

    def jpeg(colour):
        buffer = io.BytesIO()
        PILImage.new("RGB", (56, 56), colour).save(buffer, format="JPEG")
        return buffer.getvalue()

    rows = {"messages": [turn("<image>What colour is it?", "It is red."), turn("Who are you?", "I am Lumen.")],
            "images": [[{"bytes": jpeg("red"), "path": None}], []]}
    os.makedirs(folder, exist_ok=True)
    Dataset.from_dict(rows).cast_column("images", List(Image())).to_parquet(str(folder / name))
    info = {"mm": {"file_name": name, **SHAREGPT, "columns": {"messages": "messages", "images": "images"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return jpeg("red")


@pytest.mark.parametrize("streaming", [False, True])
def test_image_feature_columns_are_stored_as_files(tmp_path, streaming):
    from datasets import load_dataset

    folder = tmp_path / "data"
    red = image_feature_dataset(folder)
    assert type(load_dataset("parquet", data_files=str(folder / "mm.parquet"), split="train")[0]["images"][0]
                ).__module__.startswith("PIL")  # what arrives by default: decoded images, not paths
    train = load(tmp_path, folder, "qwen2_vl", streaming=streaming)
    rows = sorted(train, key=lambda row: not row["images"])  # a stream is shuffled
    path = rows[0]["images"][0]
    assert path.startswith(str(tmp_path / "hf-cache")) and path.endswith(".jpg")
    assert open(path, "rb").read() == red  # the bytes stored once, as they were: not decoded and encoded again
    image_id = processor_for("qwen2_vl").tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert rows[0]["input_ids"].count(image_id) == 4 and rows[1]["images"] == []


def test_decoded_images_and_audio_arrays_become_cached_files(tmp_path):
    import numpy as np
    from PIL import Image

    from llamafactory.data.converter import MediaSource, _Row
    from llamafactory.data.mm_plugin import load_audio, load_image
    from llamafactory.data.parser import DatasetAttr

    source = MediaSource(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    row = _Row({}, DatasetAttr(name="mm", load_from="file", path="mm.json"), 0)
    image = Image.new("RGB", (20, 30), (10, 200, 30))
    path = source.resolve(image, "images", row)  # a decoded Image() feature
    assert path.endswith(".png") and list(load_image(path).getdata()) == list(image.getdata())
    tone = (0.5 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    path = source.resolve({"array": tone, "sampling_rate": 8000, "path": None}, "audios", row)  # a decoded Audio()
    assert path.endswith(".wav")
    np.testing.assert_allclose(load_audio(path, 8000), tone, atol=1e-6)
    with open(path, "rb") as f:
        data = f.read()
    assert source.resolve({"bytes": data, "path": None}, "audios", row).endswith(".wav")  # named by its bytes


@pytest.mark.parametrize("stage", ["sft", "predict"])
def test_unreadable_media_names_dataset_row_and_file(tmp_path, stage):
    folder = tmp_path / "data"
    write_images(folder)
    (folder / "broken.png").write_bytes(b"not an image")
    mm_dataset(folder, [IMAGE_ROWS[0], {"messages": turn("<image>What?", "Red."), "images": ["broken.png"]}])
    with pytest.raises(ConfigError, match=r"dataset `mm` \(.*mm\.json\), row 1 \(images .*broken\.png\): cannot "
                                          r"turn its media into model inputs"):
        load(tmp_path, folder, "qwen2_vl", stage=stage)
    # a kind of media the model does not take: llava reads no videos
    rows = [{"messages": turn("<video>What moves?", "A dot."), "videos": [[f"frame_{i}.png" for i in range(2)]]}]
    mm_dataset(folder, rows, columns={"messages": "messages", "videos": "videos"})
    with pytest.raises(ConfigError, match=r"dataset `mm` \(.*mm\.json\), row 0 \(videos .*frame_0\.png.*\): "
                                          r"template `llava`: got 1 videos"):
        load(tmp_path, folder, "llava", stage=stage)


def test_paligemma_rows_left_without_an_answer_are_dropped(tmp_path, caplog):
    folder = tmp_path / "data"
    write_images(folder)
    mm_dataset(folder)
    # the tiny PaliGemma puts 4 image tokens before the text: a budget of 5 leaves one prompt token and no answer
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        train = load(tmp_path, folder, "paligemma", cutoff_len=5)
    assert "Dropped 2 of 3 training examples: cutoff_len (5) would cut inside their image/video/audio" in caplog.text
    assert train["images"] == [[]] and any(label != IGNORE_INDEX for label in train[0]["labels"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llamafactory"):  # a prompt of the image prefix alone, no text
        predict = load(tmp_path, folder, "paligemma", stage="predict", cutoff_len=4)
    assert "Dropped 2 of 3 training examples" in caplog.text and predict["images"] == [[]]


def test_openai_parts_of_other_types_keep_their_text(tmp_path):
    from llamafactory.data.converter import convert_openai
    from llamafactory.data.parser import get_dataset_list

    write_dataset(str(tmp_path), [], name="oa", file_name="oa.json", entry={"formatting": "openai"})
    attr = get_dataset_list("oa", str(tmp_path))[0]
    example = {"messages": [{"role": "user", "content": [{"type": "input_text", "text": "Who are you?"}]},
                            {"role": "assistant", "content": [{"type": "output_text", "text": "I am Lumen."}]}]}
    out = convert_openai(example, attr, 0)
    assert out["_prompt"][0]["content"] == "Who are you?" and out["_response"][0]["content"] == "I am Lumen."
    example["messages"][0]["content"].append({"type": "input_file", "file_id": "abc"})
    with pytest.raises(ConfigError, match=r"row 3: unknown content part type `input_file` \(and no `text`"):
        convert_openai(example, attr, 3)


def test_streamed_rows_with_cut_media_are_skipped_with_one_warning(tmp_path, caplog):
    folder = tmp_path / "data"
    write_images(folder)
    long = "describe this image in detail " * 8
    rows = [{"messages": turn(long + "<image>", "It is red."), "images": ["red.png"]},
            {"messages": turn(long + "<image>", "It is blue."), "images": ["blue.png"]},
            {"messages": turn("<image>What?", "It is blue."), "images": ["blue.png"]}]
    mm_dataset(folder, rows)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        kept = list(load(tmp_path, folder, cutoff_len=40, streaming=True))
    assert [row["images"] for row in kept] == [[str(folder / "blue.png")]]
    warnings = [r.getMessage() for r in caplog.records if "Skipping streamed examples" in r.getMessage()]
    assert len(warnings) == 1 and "cutoff_len (40)" in warnings[0] and "cannot be counted" in warnings[0]
