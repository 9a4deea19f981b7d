#!/usr/bin/env bash
# Installs edgekit with every optional toolchain and the test tools. Idempotent.
# torch is pinned first so pip takes the local CPU build instead of a CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  # System packages the tests use: an OpenSSH server on 127.0.0.1 for the Raspberry Pi runner tests,
  # libsndfile for soundfile.
  missing=()
  for pkg in openssh-server openssh-client libsndfile1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[test]"
