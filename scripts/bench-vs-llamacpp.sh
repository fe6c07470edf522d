#!/usr/bin/env bash
# Side-by-side engine benchmark: llama.cpp's llama-bench and `pyfill bench` run alternately on the
# same GGUF file and threads, prompts of 128/512/1024 tokens and 64 decoded tokens; prints one
# table with both figures (medians over the rounds) and the ratio. A benchmark, not a CI test.
#
# `pyfill bench` decodes after its 512-token prompt, so each step attends over 512-576 cached
# positions. llama-bench's plain `tg64` decodes from an empty context, which is cheaper; its
# `tg64 @ d512` (`-d 512`: 512 tokens in the cache first) is the like-for-like figure, and the
# table's decode ratio uses it. The empty-context figure is printed too.
#
# llama-bench is built once by scripts/llama-cpp.sh from the llama.cpp sources vendored in PyPI's
# llama-cpp-python sdist (about 10 minutes on 2 cores) and cached under $XDG_CACHE_HOME/pyfill/.
#
# Usage: scripts/bench-vs-llamacpp.sh [MODEL.gguf] [ROUNDS]
#   THREADS=2 (default: 2)
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${THREADS:-2}"
rounds="${2:-3}"

cargo build --release --quiet
pyfill=./target/release/pyfill
model="${1:-$($pyfill model path)}"
[ -f "$model" ] || { echo "no model at $model: run '$pyfill model fetch' or pass a GGUF path" >&2; exit 1; }

llama_bench=$(scripts/llama-cpp.sh llama-bench)

results=$(mktemp)
rows=$(mktemp)
log=$(mktemp)
trap 'rm -f "$results" "$rows" "$log"' EXIT
for round in $(seq "$rounds"); do
  echo "round $round/$rounds: llama.cpp" >&2
  for args in "-p 128,512,1024 -n 64" "-p 0 -n 64 -d 512"; do
    # shellcheck disable=SC2086 # the arguments are meant to split
    if ! "$llama_bench" -m "$model" -t "$threads" $args -r 1 -o jsonl 2>"$log" >"$rows"; then
      echo "llama-bench $args failed:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sed 's/^/llama /' "$rows" >>"$results"
  done
  echo "round $round/$rounds: pyfill" >&2
  ours=$("$pyfill" --threads "$threads" bench --json --model "$model")
  echo "pyfill $ours" >>"$results"
done

python3 - "$results" "$threads" "$model" <<'EOF'
import json, statistics, sys
path, threads, model = sys.argv[1:4]
llama, ours = {}, {}
for line in open(path):
    who, _, payload = line.partition(" ")
    row = json.loads(payload)
    if who == "llama":
        if row["n_prompt"]:
            key = ("prefill", row["n_prompt"])
        else:
            key = ("decode", row["n_gen"], row["n_depth"])
        llama.setdefault(key, []).append(row["avg_ts"])
    else:
        for n, rate in row["prefill"]:
            ours.setdefault(("prefill", n), []).append(rate)
        ours.setdefault(("decode", 64, 512), []).append(row["decode_tok_s"])
print(f"model {model}, {threads} threads, medians of {len(ours[('decode', 64, 512)])} alternating rounds")
print(f"| test | pyfill tok/s | llama.cpp tok/s | pyfill / llama.cpp |")
print(f"|---|---:|---:|---:|")
for key in [("prefill", 128), ("prefill", 512), ("prefill", 1024), ("decode", 64, 512)]:
    a = statistics.median(ours.get(key, [0]))
    b = statistics.median(llama.get(key, [0]))
    name = f"prefill {key[1]}" if key[0] == "prefill" else f"decode {key[1]} after 512"
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b if b else 0:.2f}x |")
empty = llama.get(("decode", 64, 0))
if empty:
    print(f"llama.cpp decode 64 from an empty context (tg64): {statistics.median(empty):.1f} tok/s")
EOF
