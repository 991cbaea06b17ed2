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
