#!/usr/bin/env bash
# The remote backend's tests against a real llama-server (tests/llama_server.rs): builds the
# server once from the llama.cpp sources vendored in PyPI's llama-cpp-python (cached under
# ~/.cache/pyfill/, about 8 minutes on 2 cores; needs cmake and a C++ compiler, installed with
# apt-get when missing and run as root), then runs the tests with it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

server=$(scripts/llama-cpp.sh llama-server)
PYFILL_LLAMA_SERVER="$server" cargo test --release --locked --test llama_server -- --ignored --test-threads 1
