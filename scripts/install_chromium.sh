#!/usr/bin/env bash
# The web UI's browser test (tests/webui/test_e2e_browser.py) drives the system's Chromium through Playwright's
# Python package; Playwright's own browser download is never used. `make test` runs this first: it installs Debian's
# `chromium` with apt when no Chromium is on PATH, apt-get is there and we are root. Anywhere else it says what to do
# and leaves it: the browser test then skips, naming the reason. Under CI (CI set) a failed install is an error.
set -u

for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done

give_up() {
  echo "install_chromium: $1; the web UI browser test will be skipped (install chromium to run it)" >&2
  if [ -n "${CI:-}" ] && [ "${2:-}" = fatal ]; then
    exit 1
  fi
  exit 0
}

command -v apt-get >/dev/null 2>&1 || give_up "no apt-get on this machine"
[ "$(id -u)" = 0 ] || give_up "not root (sudo apt-get install --no-install-recommends chromium)"

echo "install_chromium: installing Debian's chromium for the web UI browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -q >/dev/null; then
  give_up "apt-get update failed" fatal
fi
if ! apt-get install -y -q --no-install-recommends chromium >/dev/null; then
  give_up "apt-get install chromium failed" fatal
fi
command -v chromium >/dev/null 2>&1 || give_up "chromium is still not on PATH after installing it" fatal
