"""The real `lmf api` process, driven by the official openai client."""

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.api.conftest import free_port, serve
from tests.chat.helpers import CALL_TEXT, TOOLS, script_answer
from tests.conftest import LMF

openai = pytest.importorskip("openai")
USER = [{"role": "user", "content": "Who are you?"}]


@contextlib.contextmanager
def lmf_api(model_dir: str, folder, **env_vars: str) -> Iterator[str]:
    """`lmf api` on 127.0.0.1 at a free port over the tiny model, stopped when the block ends."""
    import httpx

    cfg = folder / "infer.yaml"
    cfg.write_text(f"model_name_or_path: {model_dir}\ntemplate: chatml\ndo_sample: false\nmax_new_tokens: 8\n")
    port = free_port()
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "OMP_NUM_THREADS": "2", **env_vars}
    headers = {"Authorization": f"Bearer {env_vars['API_KEY']}"} if "API_KEY" in env_vars else {}
    proc = subprocess.Popen([LMF, "api", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                if httpx.get(f"{url}/v1/models", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "lmf api did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with lmf_api(tiny_model_dir, tmp_path_factory.mktemp("api"), API_KEY="sk-test", API_MODEL_NAME="tiny-chat") as url:
        yield url


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir, tmp_path_factory):
    """One request generating and none waiting: any request that overlaps it is refused at once."""
    with lmf_api(tiny_model_dir, tmp_path_factory.mktemp("busy"), MAX_CONCURRENT="1", MAX_QUEUE="0") as url:
        yield url


def test_openai_client_against_the_real_server(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-test", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-chat"]
    reply = client.chat.completions.create(model="tiny-chat", messages=USER, max_tokens=6)
    answer = reply.choices[0].message.content
    assert answer and reply.usage.completion_tokens <= 6 and reply.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="tiny-chat", messages=USER, max_tokens=6, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer
    with_tools = client.chat.completions.create(model="tiny-chat", messages=USER, tools=TOOLS, max_tokens=6)
    assert with_tools.choices[0].finish_reason in ("stop", "length", "tool_calls")
    done = client.completions.create(model="tiny-chat", prompt="the quick", max_tokens=3)
    assert done.usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-chat", messages=USER, max_tokens=100_000)
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()


def test_plain_completion_through_the_real_server(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-test", max_retries=0)
    done = client.completions.create(model="tiny-chat", prompt="the quick brown", max_tokens=5)
    assert done.object == "text_completion" and done.model == "tiny-chat" and done.id.startswith("cmpl-")
    (choice,) = done.choices
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    assert done.usage.prompt_tokens > 0 and 0 < done.usage.completion_tokens <= 5
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    stream = client.completions.create(model="tiny-chat", prompt="the quick brown", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in stream) == choice.text  # greedy: the same text, in pieces


def test_wrong_or_missing_key_is_a_401_in_openai_shape(server):
    import httpx

    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="tiny-chat", messages=USER, max_tokens=2)
    assert err.value.status_code == 401
    assert err.value.body["type"] == "authentication_error" and err.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="tiny-chat", prompt="hi", max_tokens=2)
    bare = httpx.post(f"{server}/v1/chat/completions", json={"messages": USER})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"


def test_bad_request_is_a_400_in_openai_shape(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-chat", messages=[])
    assert err.value.status_code == 400
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"} and "empty" in body["message"]
    assert body["type"] == "invalid_request_error" and body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-chat", messages=USER, temperature=5)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as err:  # streaming checks before answering 200
        list(client.chat.completions.create(model="tiny-chat", messages=USER, max_tokens=100_000, stream=True))
    assert err.value.body["code"] == "context_length_exceeded"


def test_a_burst_beyond_the_limit_gets_429_and_the_rest_are_served(busy_server):
    client = openai.OpenAI(base_url=f"{busy_server}/v1", api_key="none", max_retries=0)  # no retry on 429
    burst = 6
    barrier = threading.Barrier(burst)
    outcomes: list[object] = [None] * burst

    def fire(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = client.chat.completions.create(model="x", messages=USER, max_tokens=200)
        except openai.APIError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    served = [o for o in outcomes if not isinstance(o, Exception)]
    assert refused and served and len(refused) + len(served) == burst, outcomes
    assert refused[0].status_code == 429 and refused[0].body["code"] == "rate_limit_exceeded"
    assert refused[0].body["type"] == "rate_limit_error" and refused[0].response.headers["retry-after"] == "1"


def test_raw_request_while_a_stream_holds_the_slot_gets_retry_after(busy_server):
    import httpx

    body = {"messages": USER, "max_tokens": 400, "stream": True}
    with httpx.Client(base_url=busy_server, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as held:
            assert held.status_code == 200  # answered only once the slot is taken; held until the stream ends
            refused = http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        deadline = time.time() + 10  # the hung-up stream frees its slot: the server serves again
        while (reply := http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})).status_code \
                == 429 and time.time() < deadline:
            time.sleep(0.1)
        assert reply.status_code == 200


def test_openai_client_reads_tool_calls(chat_model, monkeypatch):
    from llamafactory.api.app import Settings, create_app

    script_answer(chat_model.engine, CALL_TEXT, monkeypatch)
    with serve(create_app(chat_model, Settings())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="x", messages=USER, tools=TOOLS)
        (call,) = reply.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        chunks = list(client.chat.completions.create(model="x", messages=USER, tools=TOOLS, stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_api_refuses_a_bad_port_in_one_line(tmp_path):
    from tests.conftest import run_lmf

    proc = run_lmf("api", "--model_name_or_path", str(tmp_path), env={"API_PORT": "eighty"})
    assert proc.returncode == 1 and proc.stderr.strip() == "error: API_PORT must be a port number, got `eighty`"
