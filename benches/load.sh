#!/usr/bin/env bash
# Sustained typing (`pyfill load`): 20 keystrokes per second for 60 s over 5 open files of
# rich 13.9.4 (a pinned PyPI wheel), an inline completion request after every key and no
# cancellation, through the language server. Prints latency p50/p99/max, how many requests went
# unanswered, the most outstanding at once, and the server's resident memory at start, peak and
# end. A benchmark, not a CI test (about 2 minutes).
#
# Usage: benches/load.sh [extra `pyfill load` arguments...]   e.g. --seconds 30 --json
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/rich-13.9.4"
if [ ! -f "$cache/rich/console.py" ]; then
  # The same pinned sources as the keystroke benchmark; it knows how to fetch them.
  benches/typing.sh --help >/dev/null
fi

cargo build --release --quiet
exec target/release/pyfill --threads "${THREADS:-2}" load --root "$cache" \
  rich/console.py rich/text.py rich/progress.py rich/table.py rich/syntax.py "$@"
