#!/usr/bin/env bash
# Sets up the device side of edgekit on a Raspberry Pi 4/5 running 64-bit Raspberry Pi OS
# (Debian 12 "bookworm", Python 3.11): a virtual environment at ~/edgekit/venv with numpy and
# the runtimes that publish aarch64 wheels. `edgekit bench --device rpi5 --host pi@ADDRESS`
# then uses ~/edgekit/venv/bin/python by default (override with EDGEKIT_REMOTE_PYTHON).
#
#   ./install.sh                # numpy + onnxruntime + ai-edge-litert
#   ./install.sh --executorch   # also executorch (large: it brings torch)
#   ./install.sh --performance  # also set the CPU governor to performance until reboot (sudo)
#
# Idempotent: running it again upgrades nothing it does not have to.
set -euo pipefail

VENV="${EDGEKIT_VENV:-$HOME/edgekit/venv}"
WITH_EXECUTORCH=0
PERFORMANCE=0
for arg in "$@"; do
  case "$arg" in
    --executorch) WITH_EXECUTORCH=1 ;;
    --performance) PERFORMANCE=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (expected --executorch, --performance)" >&2; exit 2 ;;
  esac
done

arch="$(uname -m)"
if [ "$arch" != "aarch64" ]; then
  echo "install.sh: this is a $arch system; the wheels edgekit needs exist for aarch64 (64-bit Raspberry Pi OS)." >&2
  echo "Install the 64-bit OS (Raspberry Pi Imager: 'Raspberry Pi OS (64-bit)') and run again." >&2
  exit 1
fi
py="$(command -v python3 || true)"
if [ -z "$py" ]; then
  echo "install.sh: python3 not found; sudo apt install python3 python3-venv" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "install.sh: $("$py" --version) is too old; edgekit's runtime needs Python 3.10 or newer" >&2
  exit 1
fi
if ! "$py" -m venv --help >/dev/null 2>&1; then
  echo "install.sh: the venv module is missing; sudo apt install python3-venv" >&2
  exit 1
fi

mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Versions match edgekit's [onnx] and [tflite] extras so artifacts load as they were checked.
"$VENV/bin/python" -m pip install -q "numpy>=1.26" "onnxruntime==1.32.0" "ai-edge-litert==2.3.0"
if [ "$WITH_EXECUTORCH" -eq 1 ]; then
  "$VENV/bin/python" -m pip install -q "executorch==1.5.1"
fi

if [ "$PERFORMANCE" -eq 1 ]; then
  # Until reboot: every core at its top clock, so runs do not depend on the governor's ramp-up.
  for g in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    echo performance | sudo tee "$g" >/dev/null
  done
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for pkg in ("numpy", "onnxruntime", "ai-edge-litert", "executorch"):
    try:
        print(f"{pkg:15s} {md.version(pkg)}")
    except md.PackageNotFoundError:
        print(f"{pkg:15s} not installed")
PY
gov="$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo unknown)"
echo "CPU governor: $gov (edgekit records it with every measurement; --performance pins the clock)"
echo "ready: $VENV/bin/python"
