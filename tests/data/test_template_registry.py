"""Every registered template: its Jinja export renders what the engine encodes, and golden strings for the
families whose format has special rules (system inside the user turn, tools, reasoning)."""

import copy
import json
from dataclasses import replace

import pytest

from llamafactory.data.template import TEMPLATES, _registry, get_template
from llamafactory.data.tool_utils import TOOL_FORMATS

_registry()
CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
    {"role": "assistant", "content": "Forge made me."},
]
TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}])
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.bos_token = "<|im_start|>"
    return tokenizer


def text(tok, template, messages, system=None, tools=None):
    return tok.decode([t for p, r in template.encode_multiturn(tok, messages, system, tools) for t in p + r])


def test_at_least_forty_templates_as_llamafactory_names_them():
    assert len(TEMPLATES) >= 40
    for name in ("alpaca", "vicuna", "qwen", "qwen3", "qwen3_nothink", "llama2", "llama3", "llama4", "mistral",
                 "ministral", "gemma", "gemma3", "phi4", "deepseekr1", "glm4", "chatglm3", "yi", "gpt_oss"):
        assert name in TEMPLATES


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_jinja_export_renders_what_the_engine_encodes(tok, name, system):
    template = replace(TEMPLATES[name], enable_thinking=None)
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    rendered = tok.apply_chat_template(messages, chat_template=template.to_jinja(), tokenize=False)
    assert rendered == text(tok, template, CONVERSATION, system)


def test_llama3_golden(tok):
    assert text(tok, get_template("llama3"), CONVERSATION[:2], "S") == (
        "<|im_start|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nI am Lumen.<|eot_id|>")


def test_system_inside_the_first_user_turn(tok):
    assert text(tok, get_template("llama2"), CONVERSATION, "S") == (
        "<|im_start|>[INST] <<SYS>>\nS\n<</SYS>>\n\nWho are you? [/INST] I am Lumen. <|endoftext|>"
        "<|im_start|>[INST] Who made you? [/INST] Forge made me. <|endoftext|>")
    assert text(tok, get_template("gemma"), CONVERSATION[:2], "S").startswith(
        "<|im_start|><start_of_turn>user\nS\n\nWho are you?<end_of_turn>\n<start_of_turn>model\n")


def test_qwen_tools_calls_and_observations(tok):
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "function", "content": CALL},
                {"role": "observation", "content": '{"temp": 18}'}, {"role": "assistant", "content": "18 degrees."}]
    out = text(tok, get_template("qwen"), messages, None, TOOLS)
    assert out.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                          "\n\n# Tools\n\nYou may call one or more functions")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in out
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 18}\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n18 degrees.<|im_end|>\n") in out


def test_reasoning_thoughts(tok):
    history = [{"role": "user", "content": "1+1?"},
               {"role": "assistant", "content": "<think>\nadd\n</think>\n\n2"},
               {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    qwen3 = get_template("qwen3")
    turns = qwen3.encode_multiturn(tok, history)
    assert tok.decode(turns[0][1]) == "2<|im_end|>\n"  # history thoughts removed
    assert tok.decode(turns[1][1]) == "<think>\n\n</think>\n\n4<|im_end|>\n"  # empty thought is trained
    kept = replace(qwen3, preserve_thinking=True).encode_multiturn(tok, history)
    assert tok.decode(kept[0][1]) == "<think>\nadd\n</think>\n\n2<|im_end|>\n"
    off = replace(qwen3, enable_thinking=False)
    prompt, response = off.encode_multiturn(tok, history)[1]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # in the prompt, untrained
    assert tok.decode(response) == "4<|im_end|>\n"
    as_is = replace(qwen3, enable_thinking=None).encode_multiturn(tok, history)
    assert tok.decode(as_is[1][1]) == "4<|im_end|>\n"
    assert tok.decode(off.encode_prompt(tok, history[:3])).endswith("assistant\n<think>\n\n</think>\n\n")


def test_fix_tokenizer_writes_the_template_as_chat_template(tok):
    tokenizer = copy.deepcopy(tok)
    template = get_template("llama3")
    template.fix_tokenizer(tokenizer)
    assert "<|eot_id|>" in tokenizer.get_vocab() and tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == text(tokenizer, template, CONVERSATION)


@pytest.mark.parametrize("fmt", sorted(TOOL_FORMATS))
def test_tool_calls_render_and_parse_back(fmt):
    tool_format = TOOL_FORMATS[fmt]
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert tool_format.parse(tool_format.calls(calls)) == calls
    assert tool_format.parse("Just an answer.") == "Just an answer."
    assert "get_weather" in tool_format.tools(json.loads(TOOLS))
