"""Load on the real `lmf api` server from concurrent streaming clients, over loopback only.

    .venv/bin/python benchmarks/api_load.py [--config CFG | --model ID] [--clients 4] [--requests 32]
                                            [--max-tokens 64] [--max-concurrent N] [key=value ...]

It starts `lmf api` on 127.0.0.1 at a free port (the default config serves SmolLM2-135M-Instruct with the demo
LoRA adapter; `--model` serves a plain base model instead), waits until /v1/models answers (the first load
of SmolLM2 converts its packaged GGUF, about a minute), then sends a fixed number of streamed chat completions
(greedy, a fixed prompt) from `--clients` threads with the official openai client. It prints requests/s, time
to first token and total latency (p50/p99), generated tokens/s and the server's MAX_CONCURRENT, and stops the
server. Trailing `key=value` arguments override the config (e.g. `adapter_name_or_path=...`).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx
import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMF = os.path.join(os.path.dirname(sys.executable), "lmf")
CONFIG = os.path.join(ROOT, "examples", "inference", "smollm2_lora_sft.yaml")
PROMPT = "Write a long, detailed story about a dragon who learns to read."


@dataclass
class Result:
    """One request's timings (seconds from its start) and the tokens it generated; error is None on success."""

    ttft: float = float("nan")
    total: float = float("nan")
    tokens: int = 0
    error: str | None = None


def free_port() -> int:
    """A port nobody listens on now (the server binds it a moment later; a clash is unlikely on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with few samples p99 is simply the slowest, which is what a reader expects."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Server:
    """`lmf api` in its own process, output kept in a temporary file to show if it fails; always stopped."""

    def __init__(self, argv: list[str], env: dict[str, str], url: str) -> None:
        self.argv, self.env, self.url = argv, env, url
        self.log = tempfile.TemporaryFile("w+")  # closed in stop()
        self.proc = subprocess.Popen([LMF, "api", *argv], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT)

    def wait_ready(self, timeout: float) -> None:
        """Return once /v1/models answers 200; exit with the server's output if it dies or never answers."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                output = self.log.read()[-3000:]
                self.stop()
                sys.exit(f"`lmf api {' '.join(self.argv)}` exited with {self.proc.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers=auth_header(self.env), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the server did not answer within {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate, then kill if it lingers, so a benchmark never leaves a server behind."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def auth_header(env: dict[str, str]) -> dict[str, str]:
    """A server started under an API_KEY (inherited from the shell) needs it on every route."""
    return {"Authorization": f"Bearer {env['API_KEY']}"} if env.get("API_KEY") else {}


def one_request(client: openai.OpenAI, max_tokens: int) -> Result:
    """A streamed chat completion; TTFT is the first chunk carrying text, tokens come from the usage chunk."""
    result, chunks = Result(), 0
    start = time.perf_counter()
    try:
        stream = client.chat.completions.create(
            model="llamafactory", messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                if chunks == 1:
                    result.ttft = time.perf_counter() - start
            if chunk.usage is not None:
                result.tokens = chunk.usage.completion_tokens
    except openai.APIError as err:
        result.error = f"{type(err).__name__}: {getattr(err, 'status_code', '')}".rstrip(": ")
        return result
    result.total = time.perf_counter() - start
    result.tokens = result.tokens or chunks  # a server without usage: one text chunk is about one token
    return result


def run_load(url: str, env: dict[str, str], clients: int, requests: int, max_tokens: int) -> tuple[list[Result],
                                                                                                    float]:
    """`clients` threads take requests from one shared count until `requests` have been sent."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=env.get("API_KEY") or "none", max_retries=0,
                           timeout=600)
    results: list[Result] = []
    left, lock = [requests], threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            result = one_request(client, max_tokens)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def report(results: list[Result], wall: float, max_concurrent: str, args: argparse.Namespace) -> None:
    """Figures over the successful requests; failures (e.g. 429 when clients exceed the queue) are counted apart."""
    ok = [r for r in results if r.error is None]
    failed: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            failed[r.error] = failed.get(r.error, 0) + 1
    ttft = [r.ttft for r in ok if r.ttft == r.ttft]  # NaN when an answer had no text at all
    total = [r.total for r in ok]
    tokens = sum(r.tokens for r in ok)
    print(f"clients {args.clients}, requests {args.requests}, max_tokens {args.max_tokens}, "
          f"MAX_CONCURRENT {max_concurrent}, threads {os.environ.get('OMP_NUM_THREADS', 'torch default')}")
    print(f"succeeded {len(ok)}/{len(results)} in {wall:.1f} s" +
          (f"; failed: {', '.join(f'{k} x{v}' for k, v in failed.items())}" if failed else ""))
    print(f"requests/s            {len(ok) / wall:.3f}")
    print(f"TTFT p50 / p99 (s)    {percentile(ttft, 50):.3f} / {percentile(ttft, 99):.3f}")
    print(f"latency p50 / p99 (s) {percentile(total, 50):.3f} / {percentile(total, 99):.3f}")
    print(f"generated tokens/s    {tokens / wall:.1f} ({tokens} tokens, "
          f"{statistics.mean(r.tokens for r in ok) if ok else 0:.1f} per request)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value settings added after the config")
    parser.add_argument("--config", default=CONFIG, help="inference YAML for `lmf api`")
    parser.add_argument("--model", help="serve this base model (no adapter) instead of --config")
    parser.add_argument("--template", default="smollm2", help="chat template for --model")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-concurrent", type=int, help="MAX_CONCURRENT for the server (default: its own)")
    parser.add_argument("--startup-timeout", type=float, default=600)
    args = parser.parse_args()
    if min(args.clients, args.requests, args.max_tokens) < 1:
        parser.error("--clients, --requests and --max-tokens must be at least 1")
    argv = ([f"model_name_or_path={args.model}", f"template={args.template}", "do_sample=false"] if args.model
            else [args.config]) + args.overrides
    port = free_port()
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if args.max_concurrent is not None:
        env["MAX_CONCURRENT"] = str(args.max_concurrent)
    from llamafactory.api.app import Settings  # the server's own default, never a copy of it

    max_concurrent = env.get("MAX_CONCURRENT") or f"{Settings.max_concurrent} (server default)"
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = Server(argv, env, url)
    try:
        server.wait_ready(args.startup_timeout)
        print(f"server `lmf api {' '.join(argv)}` ready in {time.perf_counter() - started:.1f} s", flush=True)
        results, wall = run_load(url, env, args.clients, args.requests, args.max_tokens)
    finally:
        server.stop()
    report(results, wall, max_concurrent, args)


if __name__ == "__main__":
    main()
