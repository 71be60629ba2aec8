import contextlib
import socket
import threading
import time

import pytest

from tests.chat.conftest import chat_model, reward_dir, reward_model  # noqa: F401 - shared fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    """The app on a real uvicorn server in this process (so tests can reach the model it serves)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def make_client():
    from fastapi.testclient import TestClient

    from llamafactory.api.app import Settings, create_app

    def make(model, **settings):
        return TestClient(create_app(model, Settings(**settings)))

    return make
