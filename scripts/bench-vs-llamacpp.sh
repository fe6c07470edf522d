#!/usr/bin/env bash
# Side-by-side engine benchmark: llama.cpp's llama-bench and `pyfill bench` run alternately on the
# same GGUF file and threads, prompts of 128/512/1024 tokens and 64 decoded tokens; prints one
# table with both figures (medians over the rounds) and the ratio. A benchmark, not a CI test.
#
# llama-bench is built once from the llama.cpp sources vendored in PyPI's llama-cpp-python sdist
# (about 10 minutes on 2 cores) and cached under $XDG_CACHE_HOME/pyfill/.
#
# Usage: scripts/bench-vs-llamacpp.sh [MODEL.gguf] [ROUNDS]
#   THREADS=2 (default: 2)
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=0.3.36
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill"
src="$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-src"
build="$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-build"
threads="${THREADS:-2}"
rounds="${2:-3}"

cargo build --release --quiet
pyfill=./target/release/pyfill
model="${1:-$($pyfill model path)}"
[ -f "$model" ] || { echo "no model at $model: run '$pyfill model fetch' or pass a GGUF path" >&2; exit 1; }

llama_bench="$build/bin/llama-bench"
if [ ! -x "$llama_bench" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
  if [ ! -d "$src" ]; then
    tmp=$(mktemp -d)
    echo "downloading llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sources..." >&2
    # Straight from the index's JSON API: `pip download --no-binary` would first build the
    # sdist's build backend (cmake included) from source just to read its metadata.
    python3 - "$LLAMA_CPP_PYTHON_VERSION" "$tmp" <<'PY'
import hashlib, json, os, sys, urllib.parse, urllib.request
version, dest = sys.argv[1:3]
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"
page_url = index + "llama-cpp-python/"
req = urllib.request.Request(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
page = json.load(urllib.request.urlopen(req))
name = f"llama_cpp_python-{version}.tar.gz"
entry = next(f for f in page["files"] if f["filename"] == name)
data = urllib.request.urlopen(urllib.parse.urljoin(page_url, entry["url"])).read()
actual = hashlib.sha256(data).hexdigest()
if actual != entry["hashes"]["sha256"]:
    sys.exit(f"{name}: sha256 {actual}, index says {entry['hashes']['sha256']}")
open(os.path.join(dest, name), "wb").write(data)
PY
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    mkdir -p "$cache"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$src"
    rm -rf "$tmp"
  fi
  echo "building llama-bench (about 10 minutes on 2 cores)..." >&2
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target llama-bench >/dev/null
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  echo "round $round/$rounds: llama.cpp" >&2
  "$llama_bench" -m "$model" -t "$threads" -p 128,512,1024 -n 64 -r 1 -o jsonl 2>/dev/null |
    sed 's/^/llama /' >>"$results"
  echo "round $round/$rounds: pyfill" >&2
  echo "pyfill $("$pyfill" --threads "$threads" bench --json --model "$model")" >>"$results"
done

python3 - "$results" "$threads" "$model" <<'EOF'
import json, statistics, sys
path, threads, model = sys.argv[1:4]
llama, ours = {}, {}
for line in open(path):
    who, _, payload = line.partition(" ")
    row = json.loads(payload)
    if who == "llama":
        key = ("prefill", row["n_prompt"]) if row["n_prompt"] else ("decode", row["n_gen"])
        llama.setdefault(key, []).append(row["avg_ts"])
    else:
        for n, rate in row["prefill"]:
            ours.setdefault(("prefill", n), []).append(rate)
        ours.setdefault(("decode", 64), []).append(row["decode_tok_s"])
print(f"model {model}, {threads} threads, medians of {len(ours[('decode', 64)])} alternating rounds")
print(f"| test | pyfill tok/s | llama.cpp tok/s | pyfill / llama.cpp |")
print(f"|---|---:|---:|---:|")
for key in [("prefill", 128), ("prefill", 512), ("prefill", 1024), ("decode", 64)]:
    a = statistics.median(ours.get(key, [0]))
    b = statistics.median(llama.get(key, [0]))
    name = f"prefill {key[1]}" if key[0] == "prefill" else f"decode {key[1]}"
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b if b else 0:.2f}x |")
EOF
