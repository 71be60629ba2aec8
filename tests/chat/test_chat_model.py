import asyncio
import json
import threading
import time

import pytest

from llamafactory.chat.base import RequestError
from llamafactory.chat.chat_model import ChatModel, check_backend
from llamafactory.extras.errors import UserError
from tests.chat.helpers import CALL_TEXT, TOOLS, SlowSteps, script_answer

MESSAGES = [{"role": "user", "content": "Who are you?"}]


def test_stream_and_non_stream_agree_and_respect_overrides(tiny_model_dir):
    chat_model = ChatModel(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--do_sample", "false",
                            "--max_new_tokens", "12"])
    (response,) = chat_model.chat(MESSAGES)
    streamed = "".join(chat_model.stream_chat(MESSAGES))
    assert streamed == response.response_text
    assert response.finish_reason in ("stop", "length") and 0 < response.response_length <= 12
    prompt = chat_model.engine.template.encode_prompt(chat_model.engine.tokenizer, MESSAGES)
    assert response.prompt_length == len(prompt)
    (short,) = chat_model.chat(MESSAGES, max_new_tokens=3)
    assert short.response_length <= 3 and response.response_text.startswith(short.response_text.strip()[:1])


def test_stop_strings_cut_the_answer_in_both_modes(chat_model):
    (full,) = chat_model.chat(MESSAGES)
    word = full.response_text[3:5]  # something the greedy answer is known to contain
    (cut,) = chat_model.chat(MESSAGES, stop=[word, "never appears"])
    assert cut.finish_reason == "stop" and word not in cut.response_text
    assert full.response_text.startswith(cut.response_text) and cut.response_length < full.response_length
    assert "".join(chat_model.stream_chat(MESSAGES, stop=word)) == cut.response_text


def test_template_stop_word_ends_the_answer(chat_model, monkeypatch):
    engine = chat_model.engine
    assert engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.stop_ids
    script_answer(engine, "Hello there", monkeypatch)
    (response,) = chat_model.chat(MESSAGES)
    assert response.response_text == "Hello there" and response.finish_reason == "stop"
    assert "".join(chat_model.stream_chat(MESSAGES)) == "Hello there"


def test_sampling_overrides_seed_and_n(chat_model):
    sample = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=50, max_new_tokens=8, seed=7)
    first = chat_model.chat(MESSAGES, n=2, **sample)
    again = chat_model.chat(MESSAGES, n=2, **sample)
    assert len(first) == 2 and [r.response_text for r in first] == [r.response_text for r in again]
    assert all(r.response_length <= 8 for r in first)
    beams = chat_model.chat(MESSAGES, num_beams=2, n=2, max_new_tokens=4, length_penalty=0.5,
                            repetition_penalty=1.2)
    assert len(beams) == 2


@pytest.mark.parametrize("overrides,param", [
    ({"max_new_tokens": 10_000}, "max_new_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"n": 2}, "n"),
    ({"beam_width": 3}, "beam_width"),
    ({"stop": [""]}, "stop"),
])
def test_bad_overrides_are_request_errors(chat_model, overrides, param):
    with pytest.raises(RequestError) as err:
        chat_model.chat(MESSAGES, **overrides)
    assert err.value.param == param


def test_wrong_role_order_is_refused(chat_model):
    with pytest.raises(RequestError, match="alternate"):
        chat_model.chat([{"role": "assistant", "content": "hi"}])
    with pytest.raises(RequestError, match="empty"):
        chat_model.chat([])


def test_tool_calls_are_parsed_from_the_template_format(chat_model, monkeypatch):
    script_answer(chat_model.engine, CALL_TEXT, monkeypatch)
    (response,) = chat_model.chat(MESSAGES, tools=TOOLS)
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    (plain,) = chat_model.chat(MESSAGES)  # without tools the text is an ordinary answer
    assert plain.tool_calls == [] and plain.response_text == CALL_TEXT
    prompt = chat_model.engine.tokenizer.decode(chat_model.engine.encode_chat(MESSAGES, None, TOOLS))
    assert "get_weather" in prompt and "Action Input" in prompt


def test_async_twins_match_the_blocking_ones(chat_model):
    (expected,) = chat_model.chat(MESSAGES)

    async def main():
        (answer,) = await chat_model.achat(MESSAGES)
        pieces = [p async for p in chat_model.astream_chat(MESSAGES)]
        return answer, pieces

    answer, pieces = asyncio.run(main())
    assert answer.response_text == expected.response_text == "".join(pieces) and len(pieces) > 1


def test_leaving_an_async_stream_stops_generation(chat_model):
    slow = SlowSteps(chat_model.engine.model, delay=0.02)
    before = threading.active_count()
    try:
        async def main():
            stream = chat_model.astream_chat(MESSAGES, max_new_tokens=400, stop=["never appears"])
            await stream.__anext__()
            await stream.aclose()

        asyncio.run(main())
        time.sleep(0.3)
        steps = slow.steps
        time.sleep(0.3)
        assert slow.steps == steps < 100  # stopped long before the 400 steps it was allowed
    finally:
        slow.remove()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_reward_model_scores_texts_and_padding_does_not_change_them(reward_model, chat_model):
    short, long = "<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\nWho are you?<|im_end|>\nI am Lumen."
    together = reward_model.get_scores([short, long])
    alone = reward_model.get_scores([short])
    assert len(together) == 2 and together[0] != together[1]
    assert alone[0] == pytest.approx(together[0], abs=1e-5)
    assert asyncio.run(reward_model.aget_scores([long])) == pytest.approx([together[1]], abs=1e-5)
    with pytest.raises(RequestError, match="reward model"):
        reward_model.chat(MESSAGES)
    with pytest.raises(RequestError, match="reward model"):
        chat_model.get_scores([short])


def test_reward_config_without_a_value_head_says_so(tiny_model_dir):
    with pytest.raises(UserError, match="value_head.safetensors"):
        ChatModel({"model_name_or_path": tiny_model_dir, "stage": "rm", "template": "chatml"})


@pytest.mark.parametrize("backend", ["vllm", "sglang"])
def test_other_backends_refuse_in_one_line(backend):
    with pytest.raises(UserError) as err:
        check_backend(backend)
    assert backend in str(err.value) and "\n" not in str(err.value)


def test_terminal_chat_history_clear_tools_and_exit(monkeypatch, capsys, tmp_path):
    from llamafactory.chat import chat_model as module

    seen = []

    class Fake:
        is_reward_model = False

        def __init__(self, argv):
            assert argv == ["cfg.yaml"]

        def stream_chat(self, messages, system=None, tools=None, **overrides):
            seen.append(([dict(m) for m in messages], tools))
            yield CALL_TEXT if messages[-1]["content"] == "weather?" else "ok"

        def parse_tool_calls(self, text):
            return [{"name": "get_weather", "arguments": {"city": "Paris"}}] if text == CALL_TEXT else []

    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps(TOOLS))
    lines = iter(["hello", "clear", "weather?", "sunny", "exit", "never"])
    monkeypatch.setattr(module, "ChatModel", Fake)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    module.run_chat(["cfg.yaml", "--tools", str(tools_file)])
    out = capsys.readouterr().out
    assert "History has been removed." in out and 'Tool call: get_weather({"city": "Paris"})' in out
    assert [m["role"] for m in seen[1][0]] == ["user"]  # history cleared before the second question
    assert [m["role"] for m in seen[2][0]] == ["user", "function", "observation"] and seen[2][1] == TOOLS
    assert len(seen) == 3
