#!/usr/bin/env python3
"""Probe a DIFF server with TianQin's tqsdk 1.8.3, logging every frame tqsdk sends and receives.

Run it with the venv that tools/tqsdk/setup.sh prints:

  PY=$(bash tools/tqsdk/setup.sh | tail -n1)
  $PY tools/tqsdk/probe.py                      # only: import tqsdk, print versions
  $PY tools/tqsdk/probe.py --ins http://127.0.0.1:7788/symbols.json \\
      --md ws://127.0.0.1:7788/md --td ws://127.0.0.1:7788/td --user u1 --password pw \\
      [--symbol SHFE.cu2501] [--wait 2] [--timeout 20] [--jsonl frames.jsonl]

URLs default to the env vars TQ_INS_URL / TQ_MD_URL / TQ_TD_URL (tqsdk's own). Every frame is
logged on stderr ("SEND md {...}" / "RECV td {...}"); --jsonl also writes them as JSON lines
{"t","dir","conn","url","msg"}. The final summary goes to stdout.

Exit codes: 0 ok; 2 bad usage; 3 cannot reach the ins/md/td URL; 4 TqApi() (or get_quote) did not
finish within --timeout (the summary says which of mdhis_more_data / trade_more_data never came);
5 any other error raised by tqsdk.
"""
import argparse
import contextlib
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from urllib.parse import urlparse

# tqsdk reads these at TqApi() time; any of them would send it to Shinny's cloud or change modes.
for _v in ("TQ_ACTION", "TQ_AUTH", "TQ_HTTP_SERVER_ADDRESS", "TQ_BROKER_ID", "TQ_ACCOUNT_ID", "TQ_PASSWORD"):
    os.environ.pop(_v, None)

with contextlib.redirect_stderr(io.StringIO()):  # tqsdk prints a disclaimer line on import
    import tqsdk
    from tqsdk import TqApi, TqAccount

T0 = time.time()
STATE = {"api": None, "frames": 0}


def say(*a):
    print(*a, file=sys.stderr, flush=True)


class FrameHandler(logging.Handler):
    """Turns tqsdk's own DEBUG records ("websocket message sent to %s: %s", api.py:1760/1890/1911)
    into one line per frame, plus JSON lines if asked. Other records are printed as they are."""

    def __init__(self, urls, jsonl):
        super().__init__(logging.DEBUG)
        self.urls, self.jsonl = urls, jsonl

    def emit(self, record):
        try:
            msg = record.msg
            if isinstance(msg, str) and msg.startswith("websocket ") and len(record.args or ()) >= 2:
                url, body = record.args[0], record.args[1]
                direction = "RECV" if "received" in msg else "SEND"
                conn = self.urls.get(url, url)
                if isinstance(body, str):
                    try:
                        body = json.loads(body)
                    except ValueError:
                        pass
                note = msg.split("%s", 2)[-1].strip(", ") if msg.count("%s") >= 2 else ""
                STATE["frames"] += 1
                say("%8.3f %s %s %s%s" % (time.time() - T0, direction, conn,
                                          json.dumps(body, ensure_ascii=False),
                                          ("  (" + note + ")") if note else ""))
                if self.jsonl:
                    self.jsonl.write(json.dumps({"t": round(time.time() - T0, 4), "dir": direction.lower(),
                                                 "conn": conn, "url": url, "msg": body}, ensure_ascii=False) + "\n")
                    self.jsonl.flush()
            else:
                say("%8.3f %s %s: %s" % (time.time() - T0, record.levelname, record.name, record.getMessage()))
        except Exception:  # never let logging break tqsdk
            self.handleError(record)


def missing_conditions(api, user):
    """What TqApi.__init__ (api.py:251-252) is still waiting for."""
    if api is None:
        return ["TqApi not constructed yet (still fetching the ins_url?)"]
    data = api._data
    out = []
    if data.get("mdhis_more_data", True):
        out.append("md: root 'mdhis_more_data' is %r (needs false)" % data.get("mdhis_more_data", "<absent>"))
    t = data.get("trade", {}).get(user, {})
    if t.get("trade_more_data", True):
        out.append("td: 'trade/%s/trade_more_data' is %r (needs false)" % (user, t.get("trade_more_data", "<absent>")))
    return out


def preflight(name, url, timeout):
    """Fail fast with a clear message: tqsdk itself retries a refused websocket every 10 s forever
    (api.py:1862-1883) and only gives up after its 60 s init deadline (api.py:249-254)."""
    u = urlparse(url)
    if u.scheme not in ("http", "https", "ws", "wss") or not u.hostname:
        raise SystemExit(("bad %s URL %r" % (name, url), 2))
    port = u.port or (443 if u.scheme in ("https", "wss") else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise SystemExit(("cannot connect to the %s URL %s (%s:%d): %s" % (name, url, u.hostname, port, e), 3))


def run(args):
    urls = {args.md: "md", args.td: "td"}
    jsonl = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else None
    # A handler on the "TqApi" logger before TqApi() stops tqsdk from adding its own INFO stream
    # handler and its ~/.tqsdk/logs file (api.py:1259-1269), and gets its DEBUG frame records.
    lg = logging.getLogger("TqApi")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    lg.addHandler(FrameHandler(urls, jsonl))

    for name, url in (("ins", args.ins), ("md", args.md), ("td", args.td)):
        preflight(name, url, min(5.0, args.timeout))
    import requests
    try:
        r = requests.get(args.ins, timeout=min(5.0, args.timeout))
        r.raise_for_status()
        n = len(r.json())
    except Exception as e:
        raise SystemExit(("cannot fetch the instruments file %s: %s" % (args.ins, e), 3))
    say("ins_url %s: %d instruments" % (args.ins, n))

    # Our own deadline: tqsdk's is a fixed 60 s and blocks the main thread, so a watchdog thread
    # reports what is missing and ends the process.
    def on_timeout():
        say("TIMEOUT after %.1fs. Still waiting for:" % args.timeout)
        for m in missing_conditions(STATE["api"], args.user):
            say("  - " + m)
        print(json.dumps({"ok": False, "error": "timeout", "phase": STATE.get("phase"),
                          "missing": missing_conditions(STATE["api"], args.user), "frames": STATE["frames"]}),
              flush=True)
        if jsonl:
            jsonl.flush()
        os._exit(4)

    watchdog = threading.Timer(args.timeout, on_timeout)
    watchdog.daemon = True
    watchdog.start()

    orig_setup = TqApi._setup_connection

    def setup_and_remember(self):  # lets the watchdog look at api._data while __init__ blocks
        STATE["api"] = self
        return orig_setup(self)

    TqApi._setup_connection = setup_and_remember
    STATE["phase"] = "TqApi()"
    api = TqApi(TqAccount(args.broker, args.user, args.password), debug=False,
                _ins_url=args.ins, _md_url=args.md, _td_url=args.td)
    t_init = time.time() - T0
    say("TqApi() returned after %.3fs" % t_init)
    summary = {"ok": True, "tqsdk": tqsdk.__version__, "init_s": round(t_init, 3)}
    try:
        if args.symbol:
            STATE["phase"] = "get_quote(%s)" % args.symbol
            q = api.get_quote(args.symbol)
            summary["quote"] = {k: v for k, v in q.items() if not k.startswith("_")}
        end = time.time() + args.wait
        while time.time() < end:
            api.wait_update(deadline=end)
        acc = api.get_account()
        summary["account"] = {k: v for k, v in acc.items() if not k.startswith("_")}
        summary["positions"] = sorted(k for k in api.get_position() if not k.startswith("_"))
        summary["orders"] = sorted(k for k in api.get_order() if not k.startswith("_"))
        summary["trades"] = sorted(k for k in api.get_trade() if not k.startswith("_"))
    finally:
        watchdog.cancel()
        api.close()
    summary["frames"] = STATE["frames"]
    print(json.dumps(summary, ensure_ascii=False, default=str), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ins", default=os.getenv("TQ_INS_URL"), help="instruments file URL (HTTP GET)")
    ap.add_argument("--md", default=os.getenv("TQ_MD_URL"), help="market data websocket URL")
    ap.add_argument("--td", default=os.getenv("TQ_TD_URL"), help="trading websocket URL")
    ap.add_argument("--broker", default="local", help="TqAccount broker id (req_login bid)")
    ap.add_argument("--user", default="u1")
    ap.add_argument("--password", default="pw")
    ap.add_argument("--symbol", help="also get_quote(SYMBOL) and wait for its datetime")
    ap.add_argument("--wait", type=float, default=0.0, help="keep calling wait_update for N more seconds")
    ap.add_argument("--timeout", type=float, default=20.0, help="overall seconds (default 20)")
    ap.add_argument("--jsonl", help="also write every frame as a JSON line to this file")
    args = ap.parse_args()

    say("tqsdk %s (%s) on Python %s" % (tqsdk.__version__, os.path.dirname(tqsdk.__file__), sys.version.split()[0]))
    if not (args.ins or args.md or args.td):
        print(json.dumps({"ok": True, "tqsdk": tqsdk.__version__, "python": sys.version.split()[0]}))
        return 0
    if not (args.ins and args.md and args.td):
        say("ERROR: give all of --ins, --md, --td (or TQ_INS_URL, TQ_MD_URL, TQ_TD_URL)")
        return 2
    try:
        run(args)
        return 0
    except SystemExit as e:
        if isinstance(e.code, tuple):
            msg, rc = e.code
            say("ERROR: " + msg)
            print(json.dumps({"ok": False, "error": msg}), flush=True)
            return rc
        raise
    except Exception as e:
        msg = "%s: %s" % (type(e).__name__, e)
        say("ERROR: tqsdk raised " + msg)
        rc = 4 if "超时" in str(e) else 5  # tqsdk's own timeouts say 超时 ("timed out")
        print(json.dumps({"ok": False, "error": msg, "phase": STATE.get("phase")}, ensure_ascii=False), flush=True)
        return rc


if __name__ == "__main__":
    sys.exit(main())
