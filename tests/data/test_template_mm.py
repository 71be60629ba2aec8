"""The multimodal templates render plain conversations as the models' own chat templates do (the templates the
models ship, in hf_chat_templates.py), and each names its family's multimodal plugin."""

import pytest

from llamafactory.data.mm_plugin import get_mm_plugin
from llamafactory.data.template import get_template
from tests.data import hf_chat_templates as hf
from tests.mm_models import build_processor, build_tokenizer

TWO_TURNS = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
    {"role": "assistant", "content": "Forge made me."},
]


def parts(messages: list[dict], image_first: bool = False) -> list[dict]:
    """The messages as content parts (the form every one of these chat templates reads)."""
    out = []
    for i, m in enumerate(messages):
        content = [{"type": "text", "text": m["content"]}]
        if image_first and i == 0:
            content.insert(0, {"type": "image"})
        out.append({"role": m["role"], "content": content})
    return out


def ours(tokenizer, name: str, messages: list[dict], system: str | None = None) -> list[tuple[str, str]]:
    """(prompt text, answer text) per turn, as our template encodes them."""
    template = get_template(name)
    return [(tokenizer.decode(p, skip_special_tokens=False, clean_up_tokenization_spaces=False),
             tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False))
            for p, r in template.encode_multiturn(tokenizer, messages, system)]


def theirs(tokenizer, jinja: str, messages: list[dict], generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False,
                                         add_generation_prompt=generation)


def qwen2_audio_template() -> str:
    from transformers import Qwen2AudioProcessor

    return Qwen2AudioProcessor.default_chat_template.fget(None)


# template name -> (tokenizer family, the model's chat template, whether a system prompt may be given)
EXACT = {
    "qwen2_vl": ("qwen2_vl", hf.QWEN2_VL, True),
    "qwen3_vl_nothink": ("qwen3_vl", hf.QWEN3_VL_INSTRUCT, True),
    "gemma3": ("gemma3", hf.GEMMA3, True),
    "qwen2_audio": ("qwen2_audio", None, True),
}


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_template_renders_like_the_models_chat_template(name, system):
    family, jinja, _ = EXACT[name]
    jinja = jinja or qwen2_audio_template()
    tokenizer = build_tokenizer(family)
    turns = ours(tokenizer, name, TWO_TURNS, system)
    history = parts(([{"role": "system", "content": system}] if system else []) + TWO_TURNS)
    assert "".join(p + r for p, r in turns) == theirs(tokenizer, jinja, history)
    # every prompt equals the model's own generation prompt for the conversation so far
    offset = 1 if system else 0
    for i in range(len(turns)):
        expected = theirs(tokenizer, jinja, history[: offset + 2 * i + 1], generation=True)
        assert "".join(p + r for p, r in turns[:i]) + turns[i][0] == expected


def test_mllama_renders_like_llama_3_2_vision_with_an_image():
    """With an image (Llama 3.2 Vision takes no system prompt then) the format is llama3's."""
    tokenizer = build_tokenizer("mllama")
    messages = [dict(TWO_TURNS[0], content="<|image|>" + TWO_TURNS[0]["content"]), *TWO_TURNS[1:]]
    turns = ours(tokenizer, "mllama", messages)
    history = parts(TWO_TURNS, image_first=True)
    assert "".join(p + r for p, r in turns) == theirs(tokenizer, hf.MLLAMA, history)
    assert turns[0][0] == theirs(tokenizer, hf.MLLAMA, history[:1], generation=True)


@pytest.mark.parametrize("name", ["llava", "llava_next"])
def test_llava_renders_like_llava_hf_apart_from_eos(name):
    """Prompts are llava-hf's exactly; an answer ends with </s> where that template writes a space (LLaVA was
    trained with </s>, and a fine-tuned model must learn to stop)."""
    tokenizer = build_tokenizer(name)
    turns = ours(tokenizer, name, TWO_TURNS, "Be brief.")
    history = parts([{"role": "system", "content": "Be brief."}, *TWO_TURNS])
    eos = tokenizer.eos_token
    assert all(r.endswith(eos) for _, r in turns)
    assert "".join(p + r for p, r in turns).replace(eos, " ") == theirs(tokenizer, hf.LLAVA, history)
    assert turns[0][0] == theirs(tokenizer, hf.LLAVA, history[:2], generation=True)


def test_paligemma_renders_the_processors_prefix_and_suffix():
    """PaliGemma has no chat template: its processor writes <bos> + prompt + "\\n", then answer + eos."""
    processor = build_processor("paligemma")
    tokenizer = processor.tokenizer
    [(prompt, answer)] = ours(tokenizer, "paligemma", TWO_TURNS[:2])
    assert prompt == "<bos>Who are you?\n"
    assert answer == "I am Lumen." + tokenizer.eos_token


def test_qwen3_vl_thinking_template_is_a_reasoning_one():
    thinking, instruct = get_template("qwen3_vl"), get_template("qwen3_vl_nothink")
    assert thinking.reasoning and not instruct.reasoning
    assert thinking.user == instruct.user and thinking.assistant == instruct.assistant


@pytest.mark.parametrize("name,plugin", [
    ("llava", "llava"), ("llava_next", "llava_next"), ("qwen2_vl", "qwen2_vl"), ("qwen3_vl", "qwen3_vl"),
    ("qwen3_vl_nothink", "qwen3_vl"), ("gemma3", "gemma3"), ("paligemma", "paligemma"), ("mllama", "mllama"),
    ("qwen2_audio", "qwen2_audio"), ("qwen", "base"), ("llama3", "base"),
])
def test_templates_name_their_plugin(name, plugin):
    template = get_template(name)
    assert template.mm_plugin == plugin
    assert get_mm_plugin(template.mm_plugin).name == plugin
