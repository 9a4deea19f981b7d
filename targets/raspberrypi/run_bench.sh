#!/usr/bin/env bash
# Host side, for the record: benchmark one artifact on a Pi and print the JSON result.
#
#   targets/raspberrypi/run_bench.sh pi@192.168.1.20 out/model.onnx [rpi5|rpi4] [extra edgekit bench options]
#
# It is `edgekit bench ARTIFACT --device rpi5 --host pi@ADDRESS --json`, which copies the
# runtime package and the artifact over ssh/scp, runs edgekit_runtime.device_main on the Pi,
# checks the artifact's sha256 against manifest.json and records the measurement.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  sed -n '2,4p' "$0" >&2
  exit 2
fi
host="$1"; artifact="$2"; device="${3:-rpi5}"
shift $(( $# >= 3 ? 3 : 2 ))
exec edgekit bench "$artifact" --device "$device" --host "$host" --json "$@"
