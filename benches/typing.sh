#!/usr/bin/env bash
# Keystroke latency (`pyfill replay`): retypes lines of rich 13.9.4 (a pinned PyPI wheel nobody
# here wrote; console.py has 2,661 lines) through the language server, 80 ms per key, and prints
# p50/p90/max for the cold request on a freshly opened file and for the pauses after each word.
# A benchmark, not a CI test: the default 3 lines x 4 files take about 5 minutes on 2 cores.
#
# Usage: benches/typing.sh [extra `pyfill replay` arguments...]
# e.g. benches/typing.sh --lines 1 --out /tmp/typing.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/rich-13.9.4"
if [ ! -f "$cache/rich/console.py" ]; then
  tmp=$(mktemp -d)
  echo "downloading rich 13.9.4 from the package index..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp" rich==13.9.4
  python3 - "$tmp" "$cache" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/rich-13.9.4-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2] + ".part")
shutil.rmtree(sys.argv[2], ignore_errors=True)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
  rm -rf "$tmp"
fi

cargo build --release --quiet
exec target/release/pyfill --threads "${THREADS:-2}" replay --root "$cache" \
  rich/console.py rich/text.py rich/progress.py rich/table.py "$@"
