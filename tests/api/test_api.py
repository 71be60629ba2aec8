import asyncio
import json
import threading
import time

import pytest

from tests.api.conftest import serve
from tests.chat.helpers import CALL_TEXT, TOOLS, SlowSteps, script_answer

USER = [{"role": "user", "content": "Who are you?"}]


def events(text: str) -> list:
    data = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_models_chat_and_usage(chat_model, make_client):
    client = make_client(chat_model, model_name="tiny")
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    (expected,) = chat_model.chat(USER, "be brief")
    body = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "system", "content": "be brief"}, *USER]}).json()
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected.response_text}
    assert body["usage"] == {"prompt_tokens": expected.prompt_length, "completion_tokens": expected.response_length,
                             "total_tokens": expected.prompt_length + expected.response_length}
    two = client.post("/v1/chat/completions", json={"messages": USER, "n": 2, "temperature": 0.9, "seed": 3,
                                                    "max_tokens": 5, "top_p": 0.9}).json()
    assert len(two["choices"]) == 2 and two["usage"]["completion_tokens"] <= 10


def test_streaming_chat_matches_and_reports_usage(chat_model, make_client):
    client = make_client(chat_model)
    (expected,) = chat_model.chat(USER)
    reply = client.post("/v1/chat/completions", json={"messages": USER, "stream": True,
                                                      "stream_options": {"include_usage": True}})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    chunks = events(reply.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected.response_text
    assert chunks[-2]["choices"][0]["finish_reason"] == expected.finish_reason
    assert chunks[-1]["usage"]["completion_tokens"] == expected.response_length


def test_stop_and_plain_completions(chat_model, make_client):
    client = make_client(chat_model)
    (full,) = chat_model.chat(USER)
    word = full.response_text[3:5]
    body = client.post("/v1/chat/completions", json={"messages": USER, "stop": word}).json()
    assert body["choices"][0]["finish_reason"] == "stop" and word not in body["choices"][0]["message"]["content"]
    done = client.post("/v1/completions", json={"prompt": "the quick brown", "max_tokens": 4}).json()
    assert done["object"] == "text_completion" and done["usage"]["completion_tokens"] <= 4
    streamed = client.post("/v1/completions", json={"prompt": "the quick brown", "max_tokens": 4, "stream": True})
    assert "".join(c["choices"][0]["text"] for c in events(streamed.text)) == done["choices"][0]["text"]


def test_tool_calls_come_back_structured_also_when_streaming(chat_model, make_client, monkeypatch):
    script_answer(chat_model.engine, CALL_TEXT, monkeypatch)
    client = make_client(chat_model)
    body = client.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    chunks = events(client.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS,
                                                               "stream": True}).text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    (streamed,) = next(d["tool_calls"] for d in deltas if "tool_calls" in d)
    assert streamed["index"] == 0 and json.loads(streamed["function"]["arguments"]) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    none = client.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "tool_choice": "none"}).json()
    assert none["choices"][0]["message"]["content"] == CALL_TEXT
    # a tool call and its result in the history are encoded in the template's format
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    assert client.post("/v1/chat/completions", json={"messages": history, "tools": TOOLS}).status_code == 200


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"messages": [*USER, {"role": "system", "content": "late"}]}, "messages.1.role"),
    ({"messages": [*USER, {"role": "assistant", "content": "a"}]}, "messages"),
    ({"messages": USER, "max_tokens": "5"}, "max_tokens"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": "hello"}, "messages"),
    ({"messages": USER, "max_tokens": 100_000}, "max_tokens"),
    ({"messages": USER, "n": 2, "temperature": 0}, "n"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "messages.0.content"),
    ({"messages": USER, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
])
def test_bad_requests_get_openai_style_400(chat_model, make_client, body, param):
    reply = make_client(chat_model).post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param and error["message"]
    assert error["type"] == "invalid_request_error"


def test_context_overflow_and_bad_json(chat_model, make_client):
    client = make_client(chat_model)
    error = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 100_000}).json()["error"]
    assert error["code"] == "context_length_exceeded" and "512" in error["message"]
    assert client.post("/v1/chat/completions", content=b"{oops").json()["error"]["code"] == "invalid_json"


def test_api_key_is_required_on_every_route(chat_model, make_client):
    client = make_client(chat_model, api_key="sk-secret")
    for method, path in (("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/completions"),
                         ("post", "/v1/score/evaluation")):
        reply = getattr(client, method)(path, headers={"Authorization": "Bearer wrong"})
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-secret"}).status_code == 200


def test_requests_beyond_the_queue_get_429_and_the_rest_are_served(chat_model, monkeypatch):
    import httpx

    from llamafactory.api.app import Settings, create_app

    gate = threading.Event()
    real_chat = chat_model.engine.chat

    def gated_chat(*args, **kwargs):
        assert gate.wait(30)
        return real_chat(*args, **kwargs)

    monkeypatch.setattr(chat_model.engine, "chat", gated_chat)
    app = create_app(chat_model, Settings(max_concurrent=1, max_queue=1))
    limiter = app.state.limiter

    async def until(condition):
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition never met")

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            def post():
                return client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 4})

            running = asyncio.create_task(post())
            await until(lambda: limiter.running == 1)
            waiting = asyncio.create_task(post())
            await until(lambda: limiter.waiting == 1)
            refused = await post()
            gate.set()
            return refused, await running, await waiting

    refused, first, second = asyncio.run(main())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert first.status_code == 200 and second.status_code == 200
    assert limiter.running == 0 and limiter.waiting == 0


def test_client_disconnect_stops_generation(chat_model):
    import httpx

    from llamafactory.api.app import Settings, create_app

    app = create_app(chat_model, Settings())
    slow = SlowSteps(chat_model.engine.model, delay=0.02)
    try:
        with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            body = {"messages": USER, "stream": True, "max_tokens": 400, "stop": ["never appears"]}
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if '"content": "' in line and '"content": ""' not in line:
                        break  # got real text: hang up
            deadline = time.time() + 5
            while app.state.limiter.running and time.time() < deadline:
                time.sleep(0.05)
            assert app.state.limiter.running == 0
            steps = slow.steps
            time.sleep(0.3)
            assert slow.steps == steps < 150  # far fewer than the 400 steps it was allowed
            assert client.get("/v1/models").status_code == 200
    finally:
        slow.remove()


def test_reward_scores_route_and_the_ppo_api_client(reward_model, chat_model, make_client):
    from llamafactory.api.app import Settings, create_app
    from llamafactory.train.ppo.reward import ApiReward

    texts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>", "short answer"]
    expected = reward_model.get_scores(texts)
    client = make_client(reward_model)
    body = client.post("/v1/score/evaluation", json={"model": "llamafactory", "messages": texts}).json()
    assert body["scores"] == pytest.approx(expected, abs=1e-5)
    assert client.post("/v1/chat/completions", json={"messages": USER}).status_code == 400
    assert client.post("/v1/score/evaluation", json={"messages": []}).status_code == 400
    assert make_client(chat_model).post("/v1/score/evaluation", json={"messages": texts}).status_code == 400
    with serve(create_app(reward_model, Settings())) as url:
        scores = ApiReward(f"{url}/v1/score/evaluation", reward_model.engine.tokenizer).request(texts)
    assert scores == pytest.approx(expected, abs=1e-5)


def test_a_stream_that_fails_midway_ends_with_an_error_event(chat_model, make_client, monkeypatch):
    original = chat_model.astream_chat

    def failing(*args, **kwargs):
        async def pieces():
            count = 0
            async for piece in original(*args, **kwargs):
                count += 1
                if count == 2:
                    raise RuntimeError("secret detail")
                yield piece

        return pieces()

    monkeypatch.setattr(chat_model, "astream_chat", failing)
    reply = make_client(chat_model).post("/v1/chat/completions", json={"messages": USER, "stream": True})
    data = [line[len("data: "):] for line in reply.text.splitlines() if line.startswith("data: ")]
    last = json.loads(data[-1])
    assert last["error"]["type"] == "server_error" and "secret" not in reply.text
