"""Whether the model hub can be reached, decided once and fast."""

import functools
import os
import socket
import urllib.parse

from . import envs


@functools.cache
def hub_online(timeout: float = 3.0) -> bool:
    """One quick connection to the hub's host, so that an offline machine fails at once instead of
    waiting through huggingface_hub's retries."""
    if envs.hub_offline():
        return False
    if any(os.getenv(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let huggingface_hub go through it
    url = urllib.parse.urlparse(os.getenv("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
