import importlib.util

import pytest

from llamafactory.chat.webchat import launch_settings, respond
from tests.chat.helpers import CALL_TEXT, TOOLS, script_answer

HAS_GRADIO = importlib.util.find_spec("gradio") is not None
SETTINGS = ("", 8, 0.7, 0.0)  # tools text, max new tokens, top-p, temperature


def run_turn(chat_model, query, shown, conversation, tools_text=""):
    return list(respond(chat_model, query, shown, conversation, "", tools_text, *SETTINGS[1:]))


def test_a_turn_streams_into_the_page_and_keeps_template_roles(chat_model):
    (expected,) = chat_model.chat([{"role": "user", "content": "hi"}], max_new_tokens=8)
    updates = run_turn(chat_model, "hi", [], [])
    shown, conversation, box = updates[-1]
    assert len(updates) > 2 and box == ""
    assert shown == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": expected.response_text}]
    assert conversation == [{"role": "user", "content": "hi"}, {"role": "assistant",
                                                               "content": expected.response_text}]


def test_a_tool_call_waits_for_its_result(chat_model, monkeypatch):
    import json

    script_answer(chat_model.engine, CALL_TEXT, monkeypatch)
    shown, conversation, _ = run_turn(chat_model, "weather?", [], [], json.dumps(TOOLS))[-1]
    assert "Tool call: get_weather" in shown[-1]["content"] and conversation[-1]["role"] == "function"
    shown, conversation, _ = run_turn(chat_model, "sunny", shown, conversation, json.dumps(TOOLS))[-1]
    assert [m["role"] for m in conversation[:3]] == ["user", "function", "observation"]
    bad = run_turn(chat_model, "x", [], [], "not json")[-1]
    assert "tools must be a JSON list" in bad[0][-1]["content"] and bad[1] == []


def test_launch_settings_follow_gradio_env(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SHARE", "true")
    assert launch_settings() == {"server_name": "127.0.0.1", "server_port": 7999, "share": True}
    monkeypatch.setenv("GRADIO_SERVER_PORT", "x")
    with pytest.raises(Exception, match="GRADIO_SERVER_PORT"):
        launch_settings()


@pytest.mark.skipif(not HAS_GRADIO, reason="gradio is the optional `webui` extra")
def test_the_page_builds(chat_model):
    from llamafactory.chat.webchat import build_demo

    assert build_demo(chat_model).title == "llamafactory chat"


@pytest.mark.skipif(HAS_GRADIO, reason="checks the message shown when gradio is missing")
def test_webchat_without_gradio_says_how_to_install_it(tiny_model_dir):
    from tests.conftest import run_lmf

    proc = run_lmf("webchat", "--model_name_or_path", tiny_model_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: `lmf webchat` needs gradio") and "[webui]" in proc.stderr
