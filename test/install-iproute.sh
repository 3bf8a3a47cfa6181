#!/usr/bin/env bash
# The emulated-hosts test (test/integration/cluster.test.ts, test/cluster/) makes network
# namespaces and veth pairs with iproute2's `ip`. Installs the Debian package when it is
# missing and this is root (the test needs root anyway; elsewhere it skips, saying why).
set -euo pipefail
command -v ip >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] || { echo "test/install-iproute.sh: no ip command and not root: the emulated-hosts test will skip"; exit 0; }
echo "test/install-iproute.sh: installing Debian's iproute2 for the emulated-hosts test ..."
env DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null 2>&1 || {
  apt-get update -q && env DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2; }
ip -V
