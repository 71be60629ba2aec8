"""The demo sets shipped in data/ load cleanly, each for the stage it was written for."""

import logging
import os

import pytest

from llamafactory.data.loader import get_dataset
from llamafactory.data.parser import get_dataset_list
from llamafactory.data.template import get_template
from tests.data.test_loader import args

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
SETS = {
    "identity": ("sft", 90), "alpaca_en_demo": ("sft", 300), "alpaca_zh_demo": ("sft", 100),
    "sharegpt_multiturn_demo": ("sft", 60), "toolcall_en_demo": ("sft", 40), "openai_toolcall_demo": ("sft", 30),
    "dpo_en_demo": ("dpo", 100), "kto_en_demo": ("kto", 100), "c4_demo": ("pt", 300),
}


def test_every_registered_demo_set_is_covered():
    assert {a.name for a in get_dataset_list(",".join(SETS), DATA)} == set(SETS)


@pytest.mark.parametrize("name", sorted(SETS))
def test_demo_set_loads_without_dropping_rows(tmp_path, tiny_tokenizer, caplog, name):
    stage, minimum = SETS[name]
    model_args, data_args, training = args(tmp_path, DATA, dataset=name, cutoff_len=1024)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        module = get_dataset(get_template("qwen"), model_args, data_args, training, stage, tiny_tokenizer)
    train = module["train_dataset"]
    assert "dropped" not in caplog.text.lower(), caplog.text
    if stage != "pt":
        assert len(train) >= minimum
    else:
        assert sum(len(ids) for ids in train["input_ids"]) > 300 * 40


# ----------------------------------------------------------------------------------------- multimodal demo sets
MM_SETS = {"mllm_demo": ("images", "<image>"), "mllm_audio_demo": ("audios", "<audio>"),
           "mllm_video_demo": ("videos", "<video>")}
MM_MEDIA = os.path.join(DATA, "mllm_demo_data")


def _files_under(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def test_mm_demo_files_are_exactly_what_the_script_writes(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    script = os.path.join(os.path.dirname(DATA), "scripts", "make_mm_demo.py")
    subprocess.run([sys.executable, script, "--data_dir", str(tmp_path)], check=True, capture_output=True)
    fresh = _files_under(str(tmp_path))
    assert {f for f in fresh if f.startswith("mllm_")} == fresh and len(fresh) > 20
    # no stale media beside the generated ones, and every generated file is in the repository
    assert _files_under(MM_MEDIA) == {os.path.relpath(f, "mllm_demo_data") for f in fresh
                                      if f.startswith("mllm_demo_data")}
    for rel in sorted(fresh):
        kept, new = os.path.join(DATA, rel), os.path.join(tmp_path, rel)
        if rel.endswith(".png"):  # the pixels, not zlib's byte stream, which may differ between zlib builds
            with Image.open(kept) as a, Image.open(new) as b:
                assert (a.mode, a.size) == (b.mode, b.size) and np.array_equal(np.asarray(a), np.asarray(b)), rel
        else:
            with open(kept, "rb") as a, open(new, "rb") as b:
                assert a.read() == b.read(), f"{rel} differs from scripts/make_mm_demo.py's output: rerun it"


@pytest.mark.parametrize("name", sorted(MM_SETS))
def test_mm_demo_rows_match_their_media(name):
    import json
    import wave

    from PIL import Image

    column, placeholder = MM_SETS[name]
    with open(os.path.join(DATA, "dataset_info.json"), encoding="utf-8") as f:
        entry = json.load(f)[name]
    assert entry == {"file_name": f"{name}.json", "formatting": "sharegpt",
                     "columns": {"messages": "messages", column: column},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant"}}
    with open(os.path.join(DATA, entry["file_name"]), encoding="utf-8") as f:
        rows = json.load(f)
    assert len(rows) >= 2 and any(len(r["messages"]) > 2 for r in rows)  # some rows are multi-turn
    others = [p for p in ("<image>", "<video>", "<audio>") if p != placeholder]
    for i, row in enumerate(rows):
        assert set(row) == {"messages", column}, i
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles, i
        texts = [m["content"] for m in row["messages"]]
        assert sum(t.count(placeholder) for t in texts[::2]) == len(row[column]) > 0, i
        assert not any(p in t for t in texts for p in others) and not any(placeholder in t for t in texts[1::2])
        for media in row[column]:
            paths = media if column == "videos" else [media]  # a video is a list of frame images
            if column == "videos":
                assert isinstance(media, list) and len(media) >= 2, i
            for path in paths:
                assert isinstance(path, str) and path.startswith("mllm_demo_data/"), (i, path)
                full = os.path.join(DATA, path)
                assert os.path.isfile(full), (i, path)
                if column == "audios":
                    with wave.open(full) as clip:
                        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (16000, 1, 2)
                        assert 1.0 <= clip.getnframes() / 16000 <= 2.0
                else:
                    with Image.open(full) as image:
                        assert image.format == "PNG" and image.mode == "RGB" and max(image.size) <= 128
    total = sum(os.path.getsize(os.path.join(MM_MEDIA, f)) for f in _files_under(MM_MEDIA))
    assert total < 300 * 1024
