"""End to end in headless Chromium: start `lmf webui`, train a tiny model on demo data, then chat with the result.

Needs Playwright's Python package (the `test` extra) and a system Chromium (Debian's `chromium`; `make test` installs
it through scripts/install_chromium.sh where apt is available). Playwright's own browser download is never used.
On failure, a screenshot of each tab and the server's log are saved under tests/webui/artifacts/<test>/ (or
$LMF_TEST_ARTIFACTS) and the folder is printed.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from llamafactory.webui.locales import LABELS
from tests.conftest import LMF

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "data")
TABS = ("train", "eval", "chat", "export")


def find_chromium() -> str | None:
    explicit = os.getenv("LMF_CHROMIUM")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium, or set LMF_CHROMIUM)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webui(tmp_path):
    """`lmf webui` on 127.0.0.1 in its own folder (saves/ lands there); yields (url, server log, that folder)."""
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    log_path = tmp_path / "webui.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([LMF, "webui"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"lmf webui did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, log_path, work
    # Runs started from the page are its children, each leading its own process group (outside the page's group):
    # note them first, as they are no longer the page's children once it has exited.
    runs = children(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)  # the page ends its runs (as Stop does), then closes
    try:
        proc.wait(timeout=20)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        hung = True
    for pid in runs:  # whatever of a run outlived the page: its process group
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if hung:
        pytest.fail(f"lmf webui did not exit within 20 s of SIGTERM:\n{log_path.read_text()[-3000:]}")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc; none elsewhere)."""
    found = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def choose(page, elem: str, value: str) -> None:
    """Pick `value` in the gradio dropdown with id `elem`: type it, wait for its option, take it with Enter."""
    box = page.locator(f"#{elem} input").first
    box.click()
    box.fill(value)
    page.wait_for_selector(f"ul[role=listbox] li[role=option][aria-label='{value}']")
    box.press("Enter")
    page.keyboard.press("Escape")


def fill(page, elem: str, value) -> None:
    box = page.locator(f"#{elem} textarea, #{elem} input[type=number], #{elem} input[type=text]").first
    box.fill(str(value))
    box.press("Tab")  # gradio sends the change on blur


def save_screenshots(page, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for tab in TABS:
        try:
            page.click(f"#tab-{tab}-button", timeout=3000)
            page.wait_for_timeout(300)
            page.screenshot(path=os.path.join(folder, f"{tab}.png"), full_page=True)
        except Exception as err:  # noqa: BLE001 - keep whatever can be saved
            print(f"no screenshot of {tab}: {err}")


def test_train_then_chat_in_the_browser(webui, tiny_model_dir, request):
    url, log_path, work = webui
    artifacts = os.getenv("LMF_TEST_ARTIFACTS") or os.path.join(REPO, "tests", "webui", "artifacts")
    artifacts = os.path.join(artifacts, request.node.name)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(30_000)
        try:
            output_dir = drive(page, url, tiny_model_dir)
            written = (work / output_dir / "training_args.yaml").read_text()
            assert f"output_dir: {output_dir}\n" in written and "max_steps: 4\n" in written
            assert len((work / output_dir / "trainer_log.jsonl").read_text().splitlines()) == 4
            if os.getenv("LMF_TEST_SCREENSHOTS"):  # keep pictures of a good run too
                save_screenshots(page, artifacts)
            switch_language(page)
        except BaseException:
            save_screenshots(page, artifacts)
            shutil.copy(log_path, os.path.join(artifacts, "webui.log"))
            print(f"\nweb UI screenshots and server log: {artifacts}")
            raise
        finally:
            browser.close()


def drive(page, url: str, model_dir: str) -> str:
    """Train from the page, then chat with the result; returns the run's output folder."""
    page.goto(url)
    page.wait_for_selector("#train-start")

    # Top bar: a custom local model and the template its tokenizer speaks.
    fill(page, "top-model_name_or_path", model_dir)
    page.wait_for_function("() => document.querySelector('#top-model_name input').value === 'Custom'")
    page.locator("#top-advanced").get_by_text(LABELS["advanced"]["en"]["label"]).click()
    choose(page, "top-template", "chatml")

    # Train tab: demo data, a handful of steps, a loss point at each.
    fill(page, "train-dataset_dir", DATA)
    choose(page, "train-dataset", "identity")
    page.click("#train-preview_data")
    page.wait_for_function("() => document.querySelector('#train-preview_info').innerText.includes('90 rows')")
    for elem, value in (("train-learning_rate", "1e-3"), ("train-max_samples", 16), ("train-cutoff_len", 64),
                        ("train-per_device_train_batch_size", 2)):
        fill(page, elem, value)
    choose(page, "train-precision", "fp32")
    page.locator("#train-extra_tab").get_by_text(LABELS["extra_tab"]["en"]["label"]).click()
    output_dir = page.locator("#train-output_dir textarea").input_value()
    assert output_dir.startswith(f"saves/{os.path.basename(model_dir)}/lora/train_")
    # Fields just revealed by opening the accordion can take a moment to accept input on a loaded machine: fill
    # them, preview, and fill again if the preview does not show them yet.
    for _ in range(3):
        fill(page, "train-max_steps", 4)
        fill(page, "train-logging_steps", 1)
        page.click("#train-preview_cmd")
        page.wait_for_selector("#train-command")
        try:
            page.wait_for_function("() => document.querySelector('#train-command').innerText.includes("
                                   "'--max_steps 4')", timeout=5000)
            break
        except Exception:  # noqa: BLE001 - retried, then the assertion below reports what the page showed
            continue
    preview = page.locator("#train-command").inner_text()
    assert "lmf train" in preview and f"--output_dir {output_dir}" in preview and "--max_steps 4" in preview

    page.click("#train-start")
    bar = page.locator("#train-progress-bar")
    page.wait_for_selector("#train-progress-bar[data-state=finished], #train-progress-bar[data-state=failed]",
                           timeout=150_000)
    status = page.locator("#train-status").inner_text()
    log = page.locator("#train-log textarea").input_value()
    assert bar.get_attribute("data-state") == "finished", f"{status}\n{log}"
    assert bar.get_attribute("data-percent") == "100.0"
    assert "4 loss points" in status
    page.wait_for_selector("#train-loss_plot img")
    assert "training_args.yaml" in page.locator("#train-log textarea").input_value()

    # Chat tab: the trained adapter from the picker, loaded and answering.
    page.click("#tab-chat-button")
    run = os.path.basename(output_dir)
    choose(page, "top-checkpoint_path", run)
    choose(page, "chat-infer_dtype", "float32")
    page.click("#chat-load_model")
    page.wait_for_function("() => /Loaded|failed/.test(document.querySelector('#chat-chat_info').innerText)",
                           timeout=90_000)
    info = page.locator("#chat-chat_info").inner_text()
    assert info.startswith("Loaded") and run in info, info
    fill(page, "chat-max_new_tokens", 12)
    fill(page, "chat-temperature", 0)
    page.locator("#chat-query textarea").fill("Who are you?")
    page.click("#chat-submit")
    page.wait_for_function("() => { const b = document.querySelectorAll('#chat-chatbot [data-testid=bot]');"
                           " return b.length > 0 && b[b.length - 1].innerText.trim().length > 0; }", timeout=60_000)
    answer = page.locator("#chat-chatbot [data-testid=bot]").last.inner_text()
    assert answer.strip() and "⚠️" not in answer, answer
    assert page.locator("#chat-chatbot [data-testid=user]").last.inner_text().strip() == "Who are you?"
    return output_dir


def switch_language(page) -> None:
    """The language switch relabels the page (its text is checked in the DOM: CJK fonts may be missing)."""
    choose(page, "top-lang", "中文")
    page.wait_for_function("() => document.querySelector('#tab-train-button').innerText.includes('训练')")
    assert page.locator("#train-start").inner_text().strip() == "开始"
