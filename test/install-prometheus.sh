#!/usr/bin/env bash
# The metrics test runs Debian's prometheus (and its promtool) against a worker. Installs the
# Debian package when either is missing.
set -euo pipefail
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "test/install-prometheus.sh: installing Debian's prometheus for the metrics test ..."
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1 || {
  $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }
# Debian's package starts a system service on :9090; the test runs its own instance.
$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
prometheus --version | head -n 1
