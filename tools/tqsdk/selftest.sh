#!/usr/bin/env bash
# Checks the tqsdk test-client environment end to end without our server: sets up the venv, starts
# fake_diff_server.py on a free loopback port, and runs probe.py against it (login, get_quote), plus
# the failure paths (nothing listening -> exit 3; bad password -> exit 4). Prints one closing line
# "tqsdk-selftest: N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=$(bash "$here/setup.sh" | tail -n1)
tmp=$(mktemp -d)
srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=127.0.0.1:$port
urls=(--ins "http://$base/symbols.json" --md "ws://$base/md" --td "ws://$base/td")
pass=0 fail=0
check() {  # name expected_rc cmd...
    local name=$1 want=$2 rc=0; shift 2
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    if [ "$rc" = "$want" ]; then pass=$((pass + 1)); echo "ok   $name (rc $rc)"
    else fail=$((fail + 1)); echo "FAIL $name: rc $rc, wanted $want"; tail -n 20 "$tmp/$name.err" "$tmp/$name.out"; fi
}
check import 0 "$py" "$here/probe.py"
check refused 3 "$py" "$here/probe.py" "${urls[@]}" --timeout 5
"$py" "$here/fake_diff_server.py" --port "$port" --mode minimal >"$tmp/server.log" 2>&1 &
srv=$!
for _ in $(seq 50); do "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break; sleep 0.1; done
check login 0 "$py" "$here/probe.py" "${urls[@]}" --symbol SHFE.cu2501 --timeout 20
check bad_password 4 "$py" "$here/probe.py" "${urls[@]}" --password wrong --timeout 3
grep -q '"ok": true' "$tmp/login.out" && grep -q '"last_price": 74000.0' "$tmp/login.out" \
    && { pass=$((pass + 1)); echo "ok   login_summary"; } \
    || { fail=$((fail + 1)); echo "FAIL login_summary"; cat "$tmp/login.out"; }
echo "tqsdk-selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]
