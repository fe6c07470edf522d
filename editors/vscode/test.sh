#!/usr/bin/env bash
# The VS Code extension's whole check: unit tests, a packaged .vsix, and an end-to-end run in a
# real VS Code (code-server) driven by headless Chromium, where typing in a Python file must bring
# ghost text from the real model and Tab must put it in the file.
#
# Needs: the server binary (${PYFILL_BIN:-<repo>/target/release/pyfill}) and its fetched model,
# Node 20 with npm, root for apt-get (or chromium, ripgrep, libkrb5-dev and a C++ toolchain
# already installed). Reaches only Debian's and npm's registries. code-server is installed once
# into ${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/editors/ and reused.
#
# Environment: PYFILL_BIN, PYFILL_TEST_ARTIFACTS (screenshots and logs; default
# editors/vscode/test-artifacts), PYFILL_E2E_TIMEOUT_S (longest wait for one step, default 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${PYFILL_BIN:-$REPO/target/release/pyfill}"
ARTIFACTS="${PYFILL_TEST_ARTIFACTS:-$HERE/test-artifacts}"
CODE_SERVER_VERSION=4.100.3
# The ripgrep package code-server $CODE_SERVER_VERSION pins, and the ripgrep release it downloads.
RIPGREP_PACKAGE_VERSION=1.15.11
RIPGREP_TAG=v13.0.0-10
CODE_SERVER_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/editors/code-server-$CODE_SERVER_VERSION"
CODE_SERVER="$CODE_SERVER_HOME/node_modules/.bin/code-server"

started_at=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - started_at))" "$*"; }
fail() { printf '\ntest.sh: FAIL: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d -t pyfill-vscode-e2e.XXXXXX)"
# Keep code-server's own config file and logs out of $HOME (not XDG_CACHE_HOME: the model is there).
export XDG_CONFIG_HOME="$WORK/xdg-config" XDG_DATA_HOME="$WORK/xdg-data"
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"
SERVER_PGID=""
cleanup() {
  local status=$?
  if [[ -n "$SERVER_PGID" ]]; then
    # code-server, its extension host and the pyfill server it started: one process group.
    kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 -- "-$SERVER_PGID" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -d "$WORK/user-data/logs" ]]; then
    mkdir -p "$ARTIFACTS"
    cp -r "$WORK/user-data/logs" "$ARTIFACTS/vscode-logs" 2>/dev/null || true
    cp "$WORK/code-server.log" "$ARTIFACTS/" 2>/dev/null || true
    echo "test.sh: logs copied to $ARTIFACTS" >&2
  fi
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
step "checking the server binary and the model"
[[ -x "$BIN" ]] || fail "no pyfill binary at $BIN (build it with cargo build --release, or set PYFILL_BIN)"
model="$("$BIN" model path)" || fail "$BIN model path failed"
[[ -f "$model" ]] || fail "the model is not fetched ($model is missing): run $BIN model fetch"
echo "binary: $BIN"
echo "model:  $model"

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" || fail "node is not installed (Node 20 is needed)"
[[ "$node_major" == 20 ]] || fail "code-server $CODE_SERVER_VERSION needs Node 20; this is Node $(node --version)"

# ---------------------------------------------------------------------------------------------
step "system packages"
missing=()
command -v chromium >/dev/null || missing+=(chromium fonts-liberation)
command -v rg >/dev/null || missing+=(ripgrep)
if [[ ! -f "$CODE_SERVER_HOME/.installed" ]]; then
  # Only building code-server's native modules needs these.
  dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
  command -v make >/dev/null && command -v g++ >/dev/null || missing+=(build-essential)
  command -v python3 >/dev/null || missing+=(python3)
fi
if ((${#missing[@]} > 0)); then
  [[ $(id -u) == 0 ]] || fail "missing ${missing[*]}; run as root or apt-get install them"
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
fi
echo "$(chromium --version 2>/dev/null)"

# ---------------------------------------------------------------------------------------------
step "extension: npm ci, unit tests, package"
cd "$HERE"
npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed"
npm test || fail "unit tests failed"
npm run package || fail "packaging the .vsix failed"
vsix="$HERE/pyfill-$(node -p 'require("./package.json").version').vsix"
[[ -f "$vsix" ]] || fail "npm run package made no $vsix"

# ---------------------------------------------------------------------------------------------
step "code-server $CODE_SERVER_VERSION in $CODE_SERVER_HOME"
if [[ -f "$CODE_SERVER_HOME/.installed" ]]; then
  echo "already installed"
else
  rm -rf "$CODE_SERVER_HOME"
  mkdir -p "$CODE_SERVER_HOME"
  # Its install downloads ripgrep from GitHub unless the download cache already holds it: seed
  # the cache (in a private TMPDIR) with Debian's rg.
  install_tmp="$WORK/install-tmp"
  cache="$install_tmp/vscode-ripgrep-cache-$RIPGREP_PACKAGE_VERSION"
  mkdir -p "$cache" "$install_tmp/rg"
  cp "$(command -v rg)" "$install_tmp/rg/rg"
  tar -czf "$cache/ripgrep-$RIPGREP_TAG-x86_64-unknown-linux-musl.tar.gz" -C "$install_tmp/rg" rg
  [[ "$(uname -m)" == x86_64 ]] || fail "the ripgrep seeding here is for x86_64 only"
  # unsafe_perm: its postinstall refuses to run as root without it; yes: node-pty's postinstall
  # runs npx, which would otherwise wait for a "y".
  # node-gyp builds native modules (argon2) against Node's headers and would download them from
  # nodejs.org: point it at the ones the nodejs package installs.
  nodedir="${npm_config_nodedir:-}"
  if [[ -z "$nodedir" && -f /usr/include/node/node.h ]]; then nodedir=/usr; fi
  [[ -n "$nodedir" ]] || fail "Node's headers are missing (no /usr/include/node/node.h); set npm_config_nodedir"
  if ! (cd "$CODE_SERVER_HOME" &&
    TMPDIR="$install_tmp" npm_config_unsafe_perm=true npm_config_yes=true npm_config_nodedir="$nodedir" \
      npm install --no-audit --no-fund --loglevel=error --prefix . "code-server@$CODE_SERVER_VERSION" \
      >"$WORK/code-server-install.log" 2>&1); then
    tail -40 "$WORK/code-server-install.log" >&2
    mkdir -p "$ARTIFACTS" && cp "$WORK/code-server-install.log" "$ARTIFACTS/"
    fail "installing code-server failed (log above and in $ARTIFACTS/code-server-install.log)"
  fi
  "$CODE_SERVER" --version >/dev/null || fail "code-server is installed but does not run"
  touch "$CODE_SERVER_HOME/.installed"
fi
"$CODE_SERVER" --version | head -1

# ---------------------------------------------------------------------------------------------
step "end to end in code-server"
mkdir -p "$WORK/user-data/User" "$WORK/extensions" "$WORK/workspace"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
# The editor's own word suggestions would compete with the ghost text for Tab: off.
cat >"$WORK/user-data/User/settings.json" <<EOF
{
  "pyfill.path": "$BIN",
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.autoUpdate": false,
  "extensions.autoCheckUpdates": false,
  "update.mode": "none",
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.suggestOnTriggerCharacters": false,
  "editor.wordBasedSuggestions": "off",
  "editor.inlineSuggest.enabled": true,
  "files.autoSave": "off"
}
EOF
file="$WORK/workspace/circles.py"
printf 'import math\n\n\ndef area_of_circle(radius):\n    return math.pi * radius ** 2\n\n\ndef circumference_of_circle(radius):\n    ' >"$file"

"$CODE_SERVER" --user-data-dir "$WORK/user-data" --extensions-dir "$WORK/extensions" \
  --install-extension "$vsix" >"$WORK/install-extension.log" 2>&1 ||
  { cat "$WORK/install-extension.log" >&2; fail "code-server --install-extension failed"; }

port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
setsid "$CODE_SERVER" --bind-addr "127.0.0.1:$port" --auth none --disable-telemetry --disable-update-check \
  --disable-workspace-trust --user-data-dir "$WORK/user-data" --extensions-dir "$WORK/extensions" \
  "$WORK/workspace" >"$WORK/code-server.log" 2>&1 &
SERVER_PGID=$!
for _ in $(seq 1 120); do
  node -e "fetch('http://127.0.0.1:$port/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" && break
  kill -0 "$SERVER_PGID" 2>/dev/null || { cat "$WORK/code-server.log" >&2; fail "code-server exited"; }
  sleep 0.5
done
node -e "fetch('http://127.0.0.1:$port/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" ||
  { cat "$WORK/code-server.log" >&2; fail "code-server did not answer on 127.0.0.1:$port"; }
echo "code-server on 127.0.0.1:$port"

E2E_URL="http://127.0.0.1:$port/?folder=$WORK/workspace" E2E_FILE="$file" E2E_TYPED="return" \
  E2E_ARTIFACTS="$ARTIFACTS" E2E_TIMEOUT_S="${PYFILL_E2E_TIMEOUT_S:-60}" \
  timeout 900 node "$HERE/e2e/e2e.mjs" || fail "end-to-end test failed (screenshots in $ARTIFACTS)"

step "PASS in $(($(date +%s) - started_at)) s; screenshots: $ARTIFACTS/ghost-text.png, $ARTIFACTS/accepted.png"
