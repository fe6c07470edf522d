#!/usr/bin/env bash
# Builds llama.cpp programs (llama-server, llama-bench, llama-tokenize, ...) from the llama.cpp
# sources vendored in PyPI's llama-cpp-python sdist, once, and prints the path of each binary on
# stdout, one per line, in the order asked. Progress goes to stderr, the compiler's output to
# <build>/pyfill-build.log (its last lines are shown when a step fails).
#
# Sources and build are cached under $XDG_CACHE_HOME/pyfill/ (default ~/.cache/pyfill/):
#   llama.cpp-<version>-src    the vendored tree (sha256 of the sdist checked against the index)
#   llama.cpp-<version>-build  one CPU cmake build (Release, GGML_NATIVE=ON) shared by all targets
# A target whose binary is already there is not rebuilt, so a cached call returns at once. The
# first llama-server build is about 14 minutes of CPU time (7-8 minutes on 2 idle cores);
# llama-bench alone a bit less. The binaries load the shared libraries beside them in
# <build>/bin: run them where they are.
# Needs python3, cmake and a C++17 compiler; nothing else: no curl, no OpenSSL (the server is
# plain HTTP), no npm and no download of the web UI (llama-server is built without it).
#
# Usage: scripts/llama-cpp.sh TARGET...      e.g. scripts/llama-cpp.sh llama-server llama-bench
#   JOBS=N   parallel compile jobs (default: nproc)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill"
src="$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-src"
build="$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-build"

[ $# -gt 0 ] || { sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2; }
for target in "$@"; do
  case "$target" in
    llama-[a-z0-9-]*) ;;
    *) echo "not a llama.cpp program name: $target" >&2; exit 2 ;;
  esac
done

missing() {
  local target
  for target in "$@"; do [ -x "$build/bin/$target" ] || echo "$target"; done
}

todo=$(missing "$@")
if [ -n "$todo" ]; then
  mkdir -p "$cache"
  # One build at a time per cache (parallel test runs, two terminals).
  if command -v flock >/dev/null; then
    exec 9>"$cache/llama.cpp-$LLAMA_CPP_PYTHON_VERSION.lock"
    flock 9
    todo=$(missing "$@")
  fi
fi

if [ -n "$todo" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
  if [ ! -d "$src" ]; then
    # Unpacked next to its final place and renamed into it, so a broken download leaves nothing.
    tmp=$(mktemp -d "$cache/.llama.cpp-src.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
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
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$src"
    rm -rf "$tmp"
    trap - EXIT
  fi

  mkdir -p "$build"
  # CMake bakes the paths it is given into every generated Makefile: reach the same build through
  # another path (a symlinked cache) and everything is compiled again. Hence the real paths.
  src_dir=$(cd -P "$src" && pwd)
  build_dir=$(cd -P "$build" && pwd)
  log="$build_dir/pyfill-build.log"
  fail() { echo "$1 failed; the last lines of $log:" >&2; tail -n 40 "$log" >&2; exit 1; }
  # One configuration for every target. LLAMA_BUILD_SERVER (under LLAMA_BUILD_TOOLS) only adds the
  # tools/ui, tools/cli and tools/server directories, so switching it on in a build made for
  # llama-bench alone leaves every compiled object valid. The embedded web UI is neither built
  # (npm) nor fetched from Hugging Face (LLAMA_USE_PREBUILT_UI, which would try at build time);
  # llama-server then serves its API and no UI. LLAMA_CURL no longer exists in this llama.cpp
  # (OFF is silently accepted); LLAMA_OPENSSL=OFF drops HTTPS, and with it libssl.
  echo "configuring llama.cpp in $build_dir..." >&2
  cmake -S "$src_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    >"$log" 2>&1 || fail "cmake configure"
  for target in $todo; do
    echo "building $target (up to 15 minutes on 2 cores)..." >&2
    start=$SECONDS
    cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target "$target" >>"$log" 2>&1 ||
      fail "building $target"
    [ -x "$build/bin/$target" ] || fail "building $target (no $build/bin/$target)"
    echo "built $target in $((SECONDS - start)) s" >&2
  done
fi

for target in "$@"; do echo "$build/bin/$target"; done
