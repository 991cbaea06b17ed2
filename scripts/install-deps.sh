#!/bin/sh
# Installs everything junction needs to build and test on Debian 12, as root.
# The README quick start and .ci/run both call this; keep it the one place.
set -eu
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# prometheus: only for promtool (tests/integration/test_admin.py checks /metrics with it); the
# package's server is not started here. sslscan: tests/integration/test_tls.py scans the HTTPS
# listener with it.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config ca-certificates \
    libevent-dev libssl-dev libcrypt-dev liblmdb-dev libyaml-dev libmsgpack-dev libjansson-dev \
    liblua5.4-dev \
    librdkafka-dev kcat \
    libpaho-mqtt-dev mosquitto mosquitto-clients \
    libwebsockets-dev python3-websockets \
    curl python3 python3-lmdb python3-hl7 clang libclang-rt-14-dev valgrind \
    prometheus sslscan >/dev/null
# The dashboard's browser test (tests/integration/test_dashboard.py): Debian's chromium, driven
# by playwright-core from npm (pinned in tests/browser/package-lock.json). Debian 12 has no node
# by default; its nodejs + npm are enough (playwright-core 1.61 takes node 18). A node that is
# there already (another packaging, with its own npm) is kept.
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
if ! command -v node >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
elif ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
# Offline-safe: a tests/browser/node_modules that is there already is used as it is.
if [ ! -d "$(dirname "$0")/../tests/browser/node_modules/playwright-core" ]; then
    (cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund)
fi
