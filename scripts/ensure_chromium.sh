#!/usr/bin/env bash
# The browser test drives Debian's Chromium through Playwright (no browser download).
# Installs it with apt when missing and we are root; otherwise says how.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Chromium for the browser test (apt-get, about 20 s) ..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "The browser test needs Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium'" >&2
  echo "(or set TLS_CHROMIUM to another Chromium binary). Continuing; that test will fail." >&2
fi
