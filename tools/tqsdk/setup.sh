#!/usr/bin/env bash
# Creates (idempotently) the Python 3.8 virtualenv that runs TianQin's tqsdk 1.8.3 as a test client
# of our DIFF WebSocket server, and prints the venv's python path as the LAST line of stdout.
#
#   bash tools/tqsdk/setup.sh            # create or reuse target/tqsdk-venv
#   bash tools/tqsdk/setup.sh --relock   # re-resolve the top-level pins, rewrite requirements.txt
#   TQSDK_VENV=/some/dir  TQSDK_PYTHON=/path/to/python3.8  override the venv dir / interpreter
#
# Where python3.8 comes from, first that works: $TQSDK_PYTHON; python3.8 on PATH; pyenv's
# installed 3.8.x; `uv python find/install 3.8`; Debian's python3.8 package (apt); `pyenv install`.
# Everything here is logged to stderr so that `PY=$(bash tools/tqsdk/setup.sh | tail -n1)` works.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${TQSDK_VENV:-$root/target/tqsdk-venv}
lock=$here/requirements.txt
stamp=$venv/.tqsdk-lock.sha256
want_version=1.8.3
toplevel=(tqsdk==1.8.3 numpy==1.19.5 pandas==1.0.5 "websockets<11" "pyjwt<2" requests certifi aiohttp simplejson)

log() { printf 'tqsdk-setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

is_py38() { [ -n "${1:-}" ] && "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info[:2] == (3, 8) else 1)' >/dev/null 2>&1; }

pyenv_root() {
    if command -v pyenv >/dev/null 2>&1; then pyenv root 2>/dev/null && return; fi
    echo "${PYENV_ROOT:-$HOME/.pyenv}"
}

# Highest installed pyenv 3.8.x interpreter, if any.
pyenv_py38() {
    local r d best=""
    r=$(pyenv_root)
    for d in $(ls -d "$r"/versions/3.8.* 2>/dev/null | sort -t. -k3 -n); do
        [ -x "$d/bin/python3.8" ] && best="$d/bin/python3.8"
    done
    [ -n "$best" ] && echo "$best"
}

find_python38() {
    local c
    if [ -n "${TQSDK_PYTHON:-}" ]; then
        is_py38 "$TQSDK_PYTHON" || die "TQSDK_PYTHON=$TQSDK_PYTHON is not a working Python 3.8"
        log "python3.8: from \$TQSDK_PYTHON"; echo "$TQSDK_PYTHON"; return
    fi
    # 1. PATH (a pyenv shim named python3.8 only works when 3.8 is the active pyenv version: test it).
    if c=$(command -v python3.8 2>/dev/null) && is_py38 "$c"; then
        log "python3.8: found on PATH ($c)"; echo "$c"; return
    fi
    # 2. an interpreter pyenv already has
    if c=$(pyenv_py38) && is_py38 "$c"; then
        log "python3.8: pyenv's installed version ($c)"; echo "$c"; return
    fi
    # 3. uv (downloads a standalone build: needs network access to its mirror)
    if command -v uv >/dev/null 2>&1; then
        if c=$(uv python find 3.8 2>/dev/null) && is_py38 "$c"; then
            log "python3.8: uv python find ($c)"; echo "$c"; return
        fi
        log "trying: uv python install 3.8"
        if uv python install 3.8 >&2 && c=$(uv python find 3.8 2>/dev/null) && is_py38 "$c"; then
            log "python3.8: uv python install ($c)"; echo "$c"; return
        fi
    fi
    # 4. the distribution (Debian 12 has no python3.8; Ubuntu 20.04 and deadsnakes PPAs do)
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        if ! apt-cache show python3.8 >/dev/null 2>&1; then apt-get update -qq >&2 || true; fi
        if apt-cache show python3.8 >/dev/null 2>&1; then
            log "trying: apt-get install python3.8 python3.8-venv"
            if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.8 python3.8-venv >&2 \
                && c=$(command -v python3.8) && is_py38 "$c"; then
                log "python3.8: apt ($c)"; echo "$c"; return
            fi
        else
            log "apt has no python3.8 package"
        fi
    fi
    # 5. build it with pyenv (downloads the CPython source tarball; needs gcc and -dev libs)
    if command -v pyenv >/dev/null 2>&1; then
        local v
        v=$(pyenv install --list 2>/dev/null | tr -d ' ' | grep -E '^3\.8\.[0-9]+$' | tail -n1 || true)
        if [ -n "$v" ]; then
            log "trying: pyenv install -s $v (builds from source, several minutes)"
            if pyenv install -s "$v" >&2 && c=$(pyenv_py38) && is_py38 "$c"; then
                log "python3.8: pyenv install $v ($c)"; echo "$c"; return
            fi
        fi
    fi
    die "no Python 3.8 found: tried \$TQSDK_PYTHON, PATH, pyenv versions, uv, apt, pyenv install. Install one and set TQSDK_PYTHON."
}

lock_hash() { sha256sum "$lock" | cut -d' ' -f1; }

venv_ok() {
    [ -x "$venv/bin/python" ] || return 1
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(lock_hash)" ] || return 1
    # tqsdk prints a disclaimer on import: read the version from metadata instead of importing it.
    "$venv/bin/python" - "$want_version" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version("tqsdk") == sys.argv[1] else 1)
EOF
}

relock() {
    local py tmp
    py=$(find_python38)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$py" -m venv "$tmp/v"
    "$tmp/v/bin/pip" install -q --no-deps "${toplevel[0]}" >&2
    "$tmp/v/bin/pip" install -q "${toplevel[@]:1}" >&2
    {
        sed -n '1,/^# top-level:/p' "$lock"
        echo "${toplevel[0]}"
        "$tmp/v/bin/pip" freeze --all --exclude-editable | grep -v -i -E '^(tqsdk|pip|setuptools|wheel)=='
    } >"$lock.new"
    mv "$lock.new" "$lock"
    log "rewrote $lock"
}

if [ "${1:-}" = "--relock" ]; then relock; fi

start=$(date +%s)
if venv_ok; then
    log "venv $venv already has tqsdk $want_version and the locked set: nothing to do"
else
    py=$(find_python38)
    log "creating venv $venv with $("$py" -V 2>&1)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
    # --no-deps: install exactly the lock; tqsdk's own metadata (which wants scipy, any numpy/pandas)
    # is never resolved. --only-binary: the lock is all wheels on Linux x86_64; never compile numpy.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        --only-binary numpy,pandas,aiohttp,multidict,yarl,frozenlist,propcache,simplejson,websockets \
        -r "$lock" >&2
    "$venv/bin/python" - "$want_version" <<'EOF' >&2
import sys, io, contextlib
from importlib.metadata import version
with contextlib.redirect_stdout(io.StringIO()):   # swallow tqsdk's import-time disclaimer
    import tqsdk, tqsdk.api, numpy, pandas, websockets
assert tqsdk.__version__ == sys.argv[1], tqsdk.__version__
print("tqsdk %s, numpy %s, pandas %s, websockets %s on Python %s" % (
    tqsdk.__version__, numpy.__version__, pandas.__version__, websockets.__version__, sys.version.split()[0]))
EOF
    lock_hash >"$stamp"
    log "done in $(( $(date +%s) - start ))s"
fi
echo "$venv/bin/python"
