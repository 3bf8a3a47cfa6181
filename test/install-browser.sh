#!/usr/bin/env bash
# The browser test drives Debian's chromium with playwright-core (never a browser download).
# Installs the Debian package when it is missing.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "test/install-browser.sh: installing Debian's chromium for the browser test ..."
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
chromium --version
