"""Chat with media: the engine expands placeholders, feeds the media tensors to generate, and refuses bad input."""

import numpy as np
import pytest
from PIL import Image

from llamafactory.chat.base import RequestError
from tests.mm_models import build_model_dir

CASES = {"qwen2_vl": "qwen2_vl", "llava": "llava", "gemma3": "gemma3", "qwen2_audio": "qwen2_audio"}


def _image(colour: tuple[int, int, int]) -> Image.Image:
    return Image.fromarray(np.full((40, 56, 3), colour, dtype=np.uint8))


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory):
    from llamafactory.chat.chat_model import ChatModel

    models = {}
    for family, template in CASES.items():
        path = build_model_dir(family, str(tmp_path_factory.mktemp(family)))
        models[family] = ChatModel({"model_name_or_path": path, "template": template, "do_sample": False,
                                    "max_new_tokens": 6})
    return models


@pytest.mark.parametrize("family", ["qwen2_vl", "llava", "gemma3"])
def test_chat_with_an_image_returns_text_and_the_image_reaches_the_model(chat_models, family):
    model = chat_models[family]
    engine = model.engine
    question = [{"role": "user", "content": "<image>What colour is the shape?"}]
    prompt, extra = engine.prepare_chat(question, images=[_image((255, 0, 0))])
    assert "pixel_values" in extra
    media_ids = engine.plugin.media_token_ids(engine.tokenizer)
    assert sum(t in media_ids for t in prompt) >= 4  # the placeholder became the model's image tokens
    answer = model.chat(question, images=[_image((255, 0, 0))])[0]
    assert isinstance(answer.response_text, str) and answer.response_length > 0
    assert answer.prompt_length == len(prompt)
    # The pixels reach the model: the first-token distribution differs between a red and a blue image.
    import torch

    def first_logits(colour):
        ids, inputs = engine.prepare_chat(question, images=[_image(colour)])
        inputs = engine._media_inputs(inputs)
        with torch.inference_mode():
            return engine.model(input_ids=torch.tensor([ids]), **inputs).logits[0, -1]

    assert not torch.allclose(first_logits((255, 0, 0)), first_logits((0, 0, 255)))


def test_stream_chat_with_an_image(chat_models):
    pieces = list(chat_models["qwen2_vl"].stream_chat([{"role": "user", "content": "Describe <image>"}],
                                                      images=[_image((0, 255, 0))]))
    assert "".join(pieces)


def test_chat_with_audio(chat_models, tmp_path):
    import wave

    path = tmp_path / "tone.wav"
    samples = (np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 20000).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(samples.tobytes())
    model = chat_models["qwen2_audio"]
    question = [{"role": "user", "content": "<audio>What do you hear?"}]
    _, extra = model.engine.prepare_chat(question, audios=[str(path)])
    assert "input_features" in extra
    assert model.chat(question, audios=[str(path)])[0].response_length > 0


def test_placeholder_media_mismatch_is_a_request_error(chat_models):
    model = chat_models["qwen2_vl"]
    with pytest.raises(RequestError, match="placeholder"):
        model.chat([{"role": "user", "content": "<image><image> compare"}], images=[_image((1, 2, 3))])


def test_text_only_model_refuses_images(chat_model):
    with pytest.raises(RequestError, match="takes no images"):
        chat_model.chat([{"role": "user", "content": "<image>hi"}], images=[_image((1, 2, 3))])


def test_text_chat_with_a_multimodal_model_still_works(chat_models):
    assert chat_models["llava"].chat([{"role": "user", "content": "hello"}])[0].response_length > 0


def test_webchat_sends_every_image_of_the_conversation(chat_models):
    from llamafactory.chat.webchat import respond

    model = chat_models["qwen2_vl"]
    red, blue = _image((255, 0, 0)), _image((0, 0, 255))
    settings = (6, 1.0, 0.0)
    *_, (shown, conversation, _) = respond(model, "What is this?", [], [], "", "", *settings, image=red)
    assert conversation[0]["content"].startswith("<image>") and conversation[0]["images"] == [red]
    assert shown[-1]["content"] == conversation[-1]["content"]
    sent = []

    class Spy:
        engine = model.engine

        def stream_chat(self, messages, system, tools, **overrides):
            sent.append(overrides.get("images"))
            yield from model.stream_chat(messages, system, tools, **overrides)

        def parse_tool_calls(self, text):
            return []

    *_, (shown, conversation, _) = respond(Spy(), "And now?", shown, conversation, "", "", *settings, image=blue)
    *_, (shown, conversation, _) = respond(Spy(), "Which was first?", shown, conversation, "", "", *settings)
    assert sent == [[red, blue], [red, blue]]
    assert len(conversation) == 6


def test_media_tensors_follow_the_model_dtype(tmp_path):
    """Media tensors arrive as fp32; on a bf16 model the engine casts the floating ones (the towers of transformers
    5.24 also cast their input, but a model class that does not would fail) and chat works end to end."""
    import wave

    import torch

    from llamafactory.chat.chat_model import ChatModel

    clip = tmp_path / "tone.wav"
    with wave.open(str(clip), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.sin(np.arange(16000) / 5) * 9000).astype("<i2").tobytes())
    path = build_model_dir("qwen2_audio", str(tmp_path / "m"))
    model = ChatModel({"model_name_or_path": path, "template": "qwen2_audio", "infer_dtype": "bfloat16",
                       "do_sample": False, "max_new_tokens": 4})
    assert model.engine.model.dtype == torch.bfloat16
    question = [{"role": "user", "content": "<audio>What do you hear?"}]
    assert model.chat(question, audios=[str(clip)])[0].response_length > 0
    _, extra = model.engine.prepare_chat(question, audios=[str(clip)])
    moved = model.engine._media_inputs(extra)
    assert moved["input_features"].dtype == torch.bfloat16  # floating tensors follow the model
    assert moved["feature_attention_mask"].dtype == extra["feature_attention_mask"].dtype  # integer ones keep theirs


def test_typed_media_tokens_are_a_request_error(chat_models):
    model = chat_models["qwen2_vl"]
    with pytest.raises(RequestError, match="one of the model's media tokens"):
        model.chat([{"role": "user", "content": "what is <|image_pad|>?"}])
    with pytest.raises(RequestError, match="system prompt"):
        model.chat([{"role": "user", "content": "<image>hi"}], system="see <image>", images=[_image((1, 2, 3))])
