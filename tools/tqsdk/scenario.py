#!/usr/bin/env python3
"""End-to-end check of our DIFF server with the real, unmodified tqsdk 1.8.3 client.

Run it with the venv python that tools/tqsdk/setup.sh prints (tests/tqsdk_client.rs does):

  PY=$(bash tools/tqsdk/setup.sh | tail -n1)
  $PY tools/tqsdk/scenario.py --http http://127.0.0.1:8080 --ws ws://127.0.0.1:8081 \\
      --symbols CZCE.SR501,SHFE.cu2501 [--only trading|login] [--frames frames.jsonl]

--ws gives the md and td URLs (ws://.../md and ws://.../td; the server ignores the path);
--ins/--md/--td override them one by one; --ins defaults to <http>/api/market/instruments/shinny.

trading (the default runs both parts): opens u1 (password pw1) and u2 over REST, then
TqApi(TqAccount("local", "u1", "pw1")); per symbol: get_quote; two resting SELLs of u2 over REST
(1 lot, then the rest); tqsdk's insert_order BUY crossing them -> FINISHED with its two trades at
the resting price, the position in the same update, the quote (last price, the emptied ask
level), the account and position equal to REST's GET /api/account/u1 and /api/position/u1; a BUY
that rests (quote bid, frozen margin == REST), then cancel_order -> FINISHED with volume_left ==
volume and the bid level gone; get_kline_serial(symbol, 60) ends at the trade price. Then a REST
deposit reaches tqsdk's account.
login: a wrong password. tqsdk 1.8.3 only logs a server's ERROR notify and keeps waiting up to 60 s
for trade_more_data before TqApi() raises, so this part (1) runs TqApi(TqAccount("local", "u1",
"wrong")) in a child process that ends as soon as the ERROR notify has been logged and checks that
no trade tree came, and (2) speaks DIFF itself with `websockets` (the venv's, as tqsdk uses):
req_login with the right password gets the session and trade_more_data false (the control), with
a wrong password or an unknown user an ERROR notify and no trade tree.

Every step is printed; a failed check prints "FAIL <step>: <why>" (and the last frames, when
--frames is given) and exits 1; checks after which the run can go on (quote levels, fields that
differ from REST, volume_left of a cancelled order) are counted and listed at the end instead.
Every wait is bounded: a step that blocks inside tqsdk longer than its limit is ended by a
watchdog (exit 3). Exit 2: bad usage. Exit 0: all checks passed.
"""
import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time

# tqsdk reads these at TqApi() time; any of them would send it to Shinny's cloud or change modes.
for _v in ("TQ_ACTION", "TQ_AUTH", "TQ_HTTP_SERVER_ADDRESS", "TQ_BROKER_ID", "TQ_ACCOUNT_ID", "TQ_PASSWORD",
           "TQ_INS_URL", "TQ_MD_URL", "TQ_TD_URL"):
    os.environ.pop(_v, None)

with contextlib.redirect_stderr(io.StringIO()):  # tqsdk prints a disclaimer line on import
    import tqsdk
    from tqsdk import TqApi, TqAccount
import requests
import websockets

T0 = time.time()
CHECKS = {"n": 0}
FRAMES = {"file": None, "path": None}
STEP = {"name": "start"}


def out(msg):
    print("%7.3f %s" % (time.time() - T0, msg), flush=True)


def step(name):
    STEP["name"] = name
    out("== " + name)


def ok(msg):
    CHECKS["n"] += 1
    out("ok   " + msg)


class Failed(Exception):
    pass


def fail(msg):
    raise Failed(msg)


FAILED = []  # checks that failed without stopping the run


def soft_fail(msg):
    """A failed check after which the run can go on (a wrong quote level, a field that differs
    from REST): printed now, counted at the end (exit 1)."""
    FAILED.append("%s: %s" % (STEP["name"], msg))
    out("FAIL %s: %s" % (STEP["name"], msg))


def soft(fn, *a, **kw):
    """Runs fn; a Failed becomes a soft failure and the result None."""
    try:
        return fn(*a, **kw)
    except Failed as e:
        soft_fail(str(e))
        return None


def show_frames(n=40):
    if not FRAMES["path"]:
        return
    try:
        if FRAMES["file"]:
            FRAMES["file"].flush()
        with open(FRAMES["path"], encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return
    out("last %d of %d frames (%s):" % (min(n, len(lines)), len(lines), FRAMES["path"]))
    for line in lines[-n:]:
        s = line.rstrip("\n")
        print("    " + (s if len(s) <= 1500 else s[:1500] + "...(cut)"), flush=True)


@contextlib.contextmanager
def watchdog(seconds, what, diagnose=None):
    """Ends the process (exit 3) if the block runs longer than `seconds`: tqsdk's own waits
    (TqApi() 60 s, get_quote 60 s, get_kline_serial 30 s) block the main thread. `diagnose()`
    may say what is missing."""

    def fire():
        out("FAIL %s: %s did not finish within %.0f s (watchdog)" % (STEP["name"], what, seconds))
        if diagnose:
            try:
                for line in diagnose():
                    out("  still missing: " + line)
            except Exception as e:  # the main thread may be changing the data
                out("  (cannot say what is missing: %s)" % e)
        show_frames()
        sys.stdout.flush()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    try:
        yield
    finally:
        t.cancel()


class TqLog(logging.Handler):
    """tqsdk's DEBUG frame records go to the --frames file as JSON lines; its other records
    (INFO and up: the server's notifies, "通知: ...") are printed."""

    def __init__(self, md_url, td_url):
        super().__init__(logging.DEBUG)
        self.conns = {md_url: "md", td_url: "td"}
        self.notifies = []  # (levelname, message)

    def emit(self, record):
        try:
            msg = record.msg
            if isinstance(msg, str) and msg.startswith("websocket ") and len(record.args or ()) >= 2:
                if FRAMES["file"]:
                    body = record.args[1]
                    if isinstance(body, str):
                        try:
                            body = json.loads(body)
                        except ValueError:
                            pass
                    FRAMES["file"].write(json.dumps({
                        "t": round(time.time() - T0, 3), "dir": "recv" if "received" in msg else "send",
                        "conn": self.conns.get(record.args[0], record.args[0]), "msg": body},
                        ensure_ascii=False) + "\n")
            elif record.levelno >= logging.INFO:
                text = record.getMessage()
                if record.name.endswith("Notify"):
                    self.notifies.append((record.levelname, text))
                out("tqsdk %s %s: %s" % (record.levelname, record.name, text))
        except Exception:  # never let logging break tqsdk
            self.handleError(record)


def install_tq_logging(md_url, td_url):
    # A handler on "TqApi" before TqApi() keeps tqsdk from adding its own stream handler and
    # its ~/.tqsdk/logs file (api.py _setup_connection), and gives us its DEBUG frame records.
    lg = logging.getLogger("TqApi")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    for h in list(lg.handlers):
        lg.removeHandler(h)
    h = TqLog(md_url, td_url)
    lg.addHandler(h)
    return h


# What TqApi() is constructing, so that a watchdog can say what it still waits for (observation
# only: tqsdk's own _setup_connection runs unchanged).
CURRENT = {"api": None}
_tq_setup_connection = TqApi._setup_connection


def _observed_setup_connection(self):
    CURRENT["api"] = self
    return _tq_setup_connection(self)


TqApi._setup_connection = _observed_setup_connection


def init_missing(user):
    """What TqApi.__init__ is still waiting for (api.py: mdhis_more_data and trade_more_data false)."""
    api = CURRENT["api"]
    if api is None:
        return ["TqApi() has not connected yet (fetching the ins_url?)"]
    data, miss = api._data, []
    if data.get("mdhis_more_data", True):
        miss.append("md: root mdhis_more_data is %r; tqsdk needs false before TqApi() returns (it sends no "
                    "subscribe_quote or set_chart before that)" % data.get("mdhis_more_data", "<absent>"))
    t = data.get("trade", {}).get(user, {})
    if t.get("trade_more_data", True):
        miss.append("td: trade/%s/trade_more_data is %r (needs false)" % (user, t.get("trade_more_data", "<absent>")))
    return miss


# ---------------------------------------------------------------------------------------------
# REST


class Rest:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.s = requests.Session()

    def call(self, method, path, body=None):
        try:
            r = self.s.request(method, self.base + path, json=body, timeout=10)
        except requests.RequestException as e:
            fail("%s %s: %s" % (method, path, e))
        try:
            v = r.json()
        except ValueError:
            fail("%s %s -> %d, not JSON: %r" % (method, path, r.status_code, r.text[:300]))
        return r.status_code, v

    def ok(self, method, path, body=None):
        status, v = self.call(method, path, body)
        if status != 200 or v.get("success") is not True:
            fail("%s %s %s -> %d %s" % (method, path, json.dumps(body) if body is not None else "", status,
                                        json.dumps(v, ensure_ascii=False)))
        return v["data"]


# ---------------------------------------------------------------------------------------------
# helpers on tqsdk objects


def plain(entity):
    return {k: v for k, v in entity.items() if not str(k).startswith("_")}


def is_nan(x):
    return isinstance(x, float) and math.isnan(x)


def same_number(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    if is_nan(a) or is_nan(b):
        return False
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def differences(rest, tq, keys=None):
    """[(key, rest value, tqsdk value)] over REST's numeric fields (or `keys`)."""
    keys = keys or [k for k, v in rest.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    diffs = []
    for k in keys:
        tv = tq.get(k, "<absent>")
        if not same_number(rest.get(k), tv):
            diffs.append((k, rest.get(k, "<absent>"), tv))
    return diffs


def wait_until(api, cond, seconds, what, state=None):
    """wait_update until cond() is true; fail after `seconds`, saying what was seen."""
    end = time.time() + seconds
    with watchdog(seconds + 15, "waiting for " + what):
        while True:
            if cond():
                return
            if time.time() >= end:
                seen = state() if state else ""
                fail("%s: not within %.0f s%s" % (what, seconds, ("; seen: " + seen) if seen else ""))
            api.wait_update(deadline=end)


def settle(api, seconds=0.3):
    """Takes every update that comes within `seconds` of the last one (at most 5 s)."""
    hard = time.time() + 5
    while time.time() < hard and api.wait_update(deadline=min(hard, time.time() + seconds)):
        pass


def dump(obj):
    return json.dumps(plain(obj), ensure_ascii=False, default=str, sort_keys=True)


QUOTE_KEYS = ("datetime", "last_price", "volume", "open_interest", "ask_price1", "ask_volume1", "bid_price1",
              "bid_volume1", "ask_price2", "bid_price2")


def qdump(quote):
    return json.dumps({k: quote.get(k) for k in QUOTE_KEYS}, default=str)


# ---------------------------------------------------------------------------------------------
# the trading part


def trading(args, rest):
    u1, u2, pw1 = args.user, args.user2, args.password
    step("REST: open accounts %s (password %s) and %s" % (u1, pw1, u2))
    for user, pw in ((u1, pw1), (u2, pw1 + "-2")):
        acc = rest.ok("POST", "/api/account/open", {"account_id": user, "init_cash": args.init_cash, "password": pw})
        if not same_number(acc.get("balance"), args.init_cash):
            fail("open %s: balance %r, wanted %r" % (user, acc.get("balance"), args.init_cash))
    ok("accounts %s, %s opened with %.0f each" % (u1, u2, args.init_cash))

    step("TqApi(TqAccount('local', %r, %r))" % (u1, pw1))
    t = time.time()
    with watchdog(args.login_timeout, "TqApi() (waits for mdhis_more_data and trade_more_data false)",
                  lambda: init_missing(u1)):
        api = TqApi(TqAccount("local", u1, pw1), _ins_url=args.ins, _md_url=args.md, _td_url=args.td)
    ok("TqApi() returned in %.2f s" % (time.time() - t))
    try:
        trade_tree = api._data.get("trade", {}).get(u1, {})
        session = trade_tree.get("session", {})
        if session.get("user_id") != u1 or not session.get("trading_day"):
            fail("trade/%s/session is %s; wanted user_id %s and a trading_day" % (u1, dump(session), u1))
        ok("trade/%s/session %s" % (u1, dump(session)))
        acc = api.get_account()
        if not same_number(acc.balance, args.init_cash) or not same_number(acc.available, args.init_cash):
            fail("account after login: %s; wanted balance = available = %r" % (dump(acc), args.init_cash))
        ok("account after login: balance %.2f available %.2f" % (acc.balance, acc.available))

        for symbol in args.symbols:
            trade_one_symbol(args, rest, api, symbol)

        step("REST deposit reaches tqsdk's account")
        acc = api.get_account()
        before = acc.deposit
        rest.ok("POST", "/api/account/deposit", {"account_id": u1, "amount": 12345})
        wait_until(api, lambda: same_number(acc.deposit, before + 12345), 10,
                   "account.deposit %.2f + 12345" % before, lambda: dump(acc))
        ok("deposit %.2f -> %.2f pushed" % (before, acc.deposit))
        compare_account(args, rest, api, "after the deposit")
    finally:
        with watchdog(30, "api.close()"):
            api.close()


def compare_account(args, rest, api, when, seconds=5.0):
    """tqsdk's account == GET /api/account/<u1>, allowing the push a moment to arrive; REST's view."""
    acc = api.get_account()
    end = time.time() + seconds
    while True:
        r = rest.ok("GET", "/api/account/%s" % args.user)
        d = differences(r, plain(acc))
        if not d:
            ok("account %s == REST (%d fields; balance %.2f available %.2f margin %.2f commission %.2f "
               "frozen_margin %.2f)" % (when, len(differences(r, {})), r["balance"], r["available"], r["margin"],
                                        r["commission"], r["frozen_margin"]))
            break
        if time.time() >= end:
            soft_fail("account: tqsdk != REST on %s\n  REST:  %s\n  tqsdk: %s" % (
                ", ".join("%s (REST %r, tqsdk %r)" % x for x in d), json.dumps(r, sort_keys=True), dump(acc)))
            break
        api.wait_update(deadline=min(end, time.time() + 0.3))
    # The identities of SPEC section 2, on what tqsdk holds.
    a = plain(acc)
    static = a["pre_balance"] + a["deposit"] - a["withdraw"]
    bal = static + a["close_profit"] - a["commission"] - a["premium"] + a["position_profit"]
    avail = a["balance"] - a["margin"] - a["frozen_margin"] - a["frozen_commission"] - a["frozen_premium"]
    for name, want in (("static_balance", static), ("balance", bal), ("available", avail)):
        if not same_number(a[name], want):
            soft_fail("account identity: %s %r != %r computed from the other fields: %s" % (
                name, a[name], want, dump(acc)))
    return r


def compare_position(args, rest, api, symbol, when, seconds=5.0):
    pos = api.get_position(symbol)
    exch, ins = symbol.split(".", 1)
    end = time.time() + seconds
    while True:
        rows = rest.ok("GET", "/api/position/%s" % args.user)
        row = next((p for p in rows if p.get("exchange_id") == exch and p.get("instrument_id") == ins), None)
        if row is None:
            fail("GET /api/position/%s has no %s: %s" % (args.user, symbol, json.dumps(rows)))
        d = differences(row, plain(pos))
        if not d:
            ok("position %s %s == REST (%d fields; pos_long %d volume_long %s margin_long %s)" % (
                symbol, when, len(differences(row, {})), pos.pos_long, row.get("volume_long"), row.get("margin_long")))
            return row
        if time.time() >= end:
            soft_fail("position %s: tqsdk != REST on %s\n  REST:  %s\n  tqsdk: %s" % (
                symbol, ", ".join("%s (REST %r, tqsdk %r)" % x for x in d), json.dumps(row, sort_keys=True),
                dump(pos)))
            return row
        api.wait_update(deadline=min(end, time.time() + 0.3))


def trade_one_symbol(args, rest, api, symbol):
    exch, ins = symbol.split(".", 1)
    vol = args.volume

    step("%s: get_quote" % symbol)
    with watchdog(70, "get_quote(%s)" % symbol):
        quote = api.get_quote(symbol)
    if not quote.datetime:
        fail("quote %s has an empty datetime: %s" % (symbol, dump(quote)))
    tick = quote.price_tick
    if not (tick > 0) or not (quote.pre_settlement > 0):
        fail("quote %s: price_tick %r, pre_settlement %r" % (symbol, tick, quote.pre_settlement))
    ok("quote %s datetime %r pre_settlement %r upper %r lower %r" % (
        symbol, quote.datetime, quote.pre_settlement, quote.upper_limit, quote.lower_limit))
    price = quote.pre_settlement + 2 * tick  # a tick multiple inside the band
    vol_before = quote.volume
    pos = api.get_position(symbol)
    long_before = pos.pos_long

    # Two resting SELLs (1 lot, then the rest) at one price: the BUY below fills in two trades.
    sells = [1, vol - 1] if vol > 1 else [vol]
    step("%s: REST resting SELLs %s @ %s from %s" % (symbol, "+".join(map(str, sells)), price, args.user2))
    for i, v in enumerate(sells):
        r = rest.ok("POST", "/api/order/submit", {
            "account_id": args.user2, "instrument_id": symbol, "direction": "SELL", "offset": "OPEN",
            "limit_price": price, "volume": v, "client_order_id": "rest-sell-%s-%d" % (ins, i)})
        if r["order"]["status"] != "ALIVE" or r["trades"]:
            fail("the SELL did not rest: %s" % json.dumps(r))
    wait_until(api, lambda: same_number(quote.ask_price1, price) and quote.ask_volume1 == vol, 10,
               "quote %s ask_price1 %s x %d (the resting SELLs)" % (symbol, price, vol), lambda: qdump(quote))
    ok("quote shows ask %s x %d" % (quote.ask_price1, quote.ask_volume1))

    step("%s: tqsdk insert_order BUY %d @ %s (crosses)" % (symbol, vol, price))
    order = api.insert_order(symbol, "BUY", "OPEN", vol, limit_price=price)
    oid = order.order_id
    wait_until(api, lambda: order.status == "FINISHED", 10, "order %s FINISHED" % oid, lambda: dump(order))
    # What tqsdk has when the order turns FINISHED: a fill comes as one rtn_data with the order,
    # its trade, the position and the account.
    if order.is_error:
        fail("order %s FINISHED with an empty exchange_order_id (tqsdk's is_error): %s" % (oid, dump(order)))
    if order.volume_left != 0 or order.volume_orign != vol:
        fail("order %s: volume_left %r volume_orign %r, wanted 0 and %d: %s" % (
            oid, order.volume_left, order.volume_orign, vol, dump(order)))
    for k, want in (("exchange_id", exch), ("instrument_id", ins), ("direction", "BUY"), ("offset", "OPEN"),
                    ("price_type", "LIMIT"), ("time_condition", "GFD"), ("volume_condition", "ANY")):
        if order.get(k) != want:
            fail("order %s: %s %r, wanted %r: %s" % (oid, k, order.get(k), want, dump(order)))
    if not same_number(order.limit_price, price) or not order.insert_date_time > 0:
        fail("order %s: limit_price %r insert_date_time %r: %s" % (oid, order.limit_price, order.insert_date_time,
                                                                   dump(order)))
    records = order.trade_records
    if not records:
        fail("order %s FINISHED but no trade has its order_id (tqsdk matches trades to orders by the client's "
             "order_id); trades: %s" % (oid, json.dumps({k: plain(v) for k, v in api.get_trade().items()
                                                         if not k.startswith("_")}, default=str)))
    if sorted(t.volume for t in records.values()) != sorted(sells) \
            or any(not same_number(t.price, price) for t in records.values()):
        fail("order %s trades: %s; wanted %d trades of %s lots at %s" % (
            oid, json.dumps({k: plain(v) for k, v in records.items()}, default=str), len(sells), sells, price))
    for tid, t in records.items():
        for k, want in (("exchange_id", exch), ("instrument_id", ins), ("direction", "BUY"), ("offset", "OPEN")):
            if t.get(k) != want:
                fail("trade %s: %s %r, wanted %r: %s" % (tid, k, t.get(k), want, dump(t)))
        if not t.trade_date_time > 0 or not t.exchange_trade_id:
            fail("trade %s: trade_date_time %r exchange_trade_id %r" % (tid, t.trade_date_time, t.exchange_trade_id))
    if not same_number(order.trade_price, price):
        fail("order %s trade_price %r, wanted %s" % (oid, order.trade_price, price))
    ok("order %s FINISHED, exchange_order_id %r, %d trade(s) %s, trade_price %s" % (
        oid, order.exchange_order_id, len(records), sorted(records), order.trade_price))
    if pos.pos_long != long_before + vol:
        fail("position %s pos_long %r in the update that finished the order; wanted %d "
             "(pos_long_today %r, pos_long_his %r)" % (symbol, pos.pos_long, long_before + vol,
                                                       pos.pos_long_today, pos.pos_long_his))
    ok("position %s pos_long %d (with the fill)" % (symbol, pos.pos_long))

    wait_until(api, lambda: same_number(quote.last_price, price) and quote.volume == vol_before + vol, 10,
               "quote %s last_price %s, volume %d" % (symbol, price, vol_before + vol), lambda: qdump(quote))
    soft(wait_until, api, lambda: is_nan(quote.ask_price1), 3,
         "quote %s ask_price1 cleared (the only ask was filled; tqsdk ignores null under quotes "
         "and clears a level only on \"-\")" % symbol, lambda: qdump(quote))
    ok("quote %s last_price %s volume %d" % (symbol, quote.last_price, quote.volume))

    step("%s: account and position equal REST" % symbol)
    settle(api)
    r = compare_account(args, rest, api, "after the fill")
    if not (r["margin"] > 0 and r["commission"] > 0):
        fail("REST account after the fill has margin %r commission %r" % (r["margin"], r["commission"]))
    compare_position(args, rest, api, symbol, "after the fill")
    if not same_number(pos.get("last_price"), price):
        soft_fail("position %s last_price %r, wanted the last trade's %s (positions are marked to the last "
                  "price): %s" % (symbol, pos.get("last_price"), price, dump(pos)))

    low = price - 5 * tick
    step("%s: tqsdk insert_order BUY %d @ %s (rests), then cancel_order" % (symbol, vol, low))
    o2 = api.insert_order(symbol, "BUY", "OPEN", vol, limit_price=low)
    wait_until(api, lambda: o2.exchange_order_id != "" or o2.status == "FINISHED", 10,
               "order %s accepted (exchange_order_id set)" % o2.order_id, lambda: dump(o2))
    if o2.status != "ALIVE" or o2.volume_left != vol:
        fail("order %s should rest: %s" % (o2.order_id, dump(o2)))
    wait_until(api, lambda: same_number(quote.bid_price1, low), 10,
               "quote %s bid_price1 %s" % (symbol, low), lambda: qdump(quote))
    ok("order %s ALIVE (is_online %s), quote bid %s x %d" % (o2.order_id, o2.is_online, quote.bid_price1,
                                                              quote.bid_volume1))
    settle(api)
    r = compare_account(args, rest, api, "with the live order")
    if not r["frozen_margin"] > 0:
        fail("REST account frozen_margin %r with a live order" % r["frozen_margin"])
    api.cancel_order(o2)
    wait_until(api, lambda: o2.status == "FINISHED", 10, "order %s FINISHED after cancel_order" % o2.order_id,
               lambda: dump(o2))
    if o2.trade_records:
        fail("cancelled order %s has trades %s" % (o2.order_id, sorted(o2.trade_records)))
    if o2.volume_left != vol:  # tqsdk (and CTP) count filled lots as volume_orign - volume_left
        soft_fail("cancelled order %s: volume_left %r, wanted %d (nothing filled; tqsdk reports "
                  "volume_orign - volume_left as filled): %s" % (o2.order_id, o2.volume_left, vol, dump(o2)))
    if o2.is_error:
        fail("cancelled order %s has an empty exchange_order_id (tqsdk then calls it an error): %s" % (
            o2.order_id, dump(o2)))
    ok("order %s FINISHED, volume_left %d, last_msg %r" % (o2.order_id, o2.volume_left, o2.last_msg))
    soft(wait_until, api, lambda: is_nan(quote.bid_price1), 3,
         "quote %s bid_price1 cleared after the cancel (tqsdk ignores null under quotes; \"-\" clears)"
         % symbol, lambda: qdump(quote))
    settle(api)
    r = compare_account(args, rest, api, "after the cancel")
    if r["frozen_margin"] != 0 or r["frozen_commission"] != 0:
        fail("REST account still frozen after the cancel: %s" % json.dumps(r))
    compare_position(args, rest, api, symbol, "after the cancel")

    step("%s: get_kline_serial(%s, 60)" % (symbol, symbol))
    with watchdog(45, "get_kline_serial(%s, 60)" % symbol):
        klines = api.get_kline_serial(symbol, 60)
    last = klines.iloc[-1]
    if not same_number(float(last["close"]), price) or not float(last["volume"]) >= vol:
        fail("last 1-minute bar of %s: close %r volume %r, wanted close %s volume >= %d\n%s" % (
            symbol, last["close"], last["volume"], price, vol, klines.tail(3).to_string()))
    if not float(last["datetime"]) > 0 or not float(last["high"]) >= price >= float(last["low"]):
        fail("last bar of %s: %s" % (symbol, last.to_dict()))
    ok("last bar id %d datetime %d close %s volume %d" % (last["id"], last["datetime"], last["close"], last["volume"]))


# ---------------------------------------------------------------------------------------------
# the wrong-password part


def bad_login_child(args):
    """Runs in a child process: TqApi() with a wrong password. Ends itself (os._exit) once the
    server's ERROR notify was logged and a grace period showed no trade tree; exit 0 on that,
    1 otherwise. TqApi() itself would wait 60 s and then raise."""
    seen = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if record.name.endswith("Notify") and record.levelno >= logging.ERROR:
                seen.set()

    install_tq_logging(args.md, args.td)
    logging.getLogger("TqApi").addHandler(Watch(logging.INFO))

    def watcher():
        if not seen.wait(args.bad_login_wait):
            out("FAIL child: no ERROR notify within %.0f s of TqApi() with a wrong password" % args.bad_login_wait)
            show_frames()
            os._exit(1)
        time.sleep(1.5)  # anything sent with or after the notify has arrived by now
        api = CURRENT["api"]
        tree = api._data.get("trade", {}).get(args.user) if api is not None else None
        keys = sorted(k for k in (tree or {}) if not k.startswith("_"))
        if keys:
            out("FAIL child: a trade tree for %s came despite the wrong password: keys %s" % (args.user, keys))
            show_frames()
            os._exit(1)
        out("child: ERROR notify logged, no trade tree for %s; TqApi() is still waiting (it would raise "
            "after 60 s)" % args.user)
        sys.stdout.flush()
        os._exit(0)

    threading.Thread(target=watcher, daemon=True).start()
    try:
        TqApi(TqAccount("local", args.user, args.password), _ins_url=args.ins, _md_url=args.md, _td_url=args.td)
    except Exception as e:
        out("FAIL child: TqApi() raised before the watcher decided: %s: %s" % (type(e).__name__, e))
        os._exit(1)
    out("FAIL child: TqApi() returned with a wrong password")
    os._exit(1)


async def raw_login(td_url, user, password, seconds):
    """A DIFF td session by hand: req_login, then peek for `seconds`; the merged notifies and
    whether any rtn_data carried trade/<user> (and its last trade_more_data / session)."""
    notes, trade_keys, frames, seen = [], set(), [], {}
    async with websockets.connect(td_url, max_size=None, open_timeout=5, close_timeout=2) as ws:
        await ws.send(json.dumps({"aid": "req_login", "bid": "local", "user_name": user, "password": password}))
        await ws.send(json.dumps({"aid": "peek_message"}))
        end = time.time() + seconds
        while time.time() < end:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.05, end - time.time()))
            except asyncio.TimeoutError:
                break
            msg = json.loads(raw)
            frames.append(msg)
            if msg.get("aid") != "rtn_data":
                continue
            for patch in msg.get("data", []):
                for n in (patch.get("notify") or {}).values():
                    notes.append(n)
                t = (patch.get("trade") or {}).get(user)
                if t is not None:
                    trade_keys.update(t.keys())
                    for k in ("trade_more_data", "session"):
                        if k in t:
                            seen[k] = t[k]
            await ws.send(json.dumps({"aid": "peek_message"}))
            if seen.get("trade_more_data") is False:
                break
            if any(n.get("level") == "ERROR" for n in notes):  # anything else would come right after it
                end = min(end, time.time() + 0.5)
    return notes, trade_keys, seen, frames


def login_checks(args, rest):
    step("wrong password with tqsdk: TqApi(TqAccount('local', %r, 'wrong')) in a child process" % args.user)
    cmd = [sys.executable, os.path.abspath(__file__), "--bad-login-child", "--user", args.user, "--password",
           "wrong", "--ins", args.ins, "--md", args.md, "--td", args.td, "--http", args.http,
           "--bad-login-wait", str(args.bad_login_wait)]
    if FRAMES["path"]:
        cmd += ["--frames", FRAMES["path"] + ".bad-login"]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=args.bad_login_wait + 20)
    except subprocess.TimeoutExpired as e:
        fail("the child did not end within %.0f s; its output:\n%s" % (
            args.bad_login_wait + 20, (e.output or b"").decode("utf-8", "replace")))
    text = p.stdout.decode("utf-8", "replace")
    for line in text.splitlines():
        print("    | " + line, flush=True)
    if p.returncode != 0:
        fail("TqApi() with a wrong password: child exit %d (see its output above)" % p.returncode)
    ok("tqsdk logged the server's ERROR notify and got no trade tree for %s" % args.user)

    step("raw DIFF req_login: right password (control), wrong password, unknown user")
    notes, keys, seen, frames = asyncio.run(raw_login(args.td, args.user, args.good_password, 5))
    if seen.get("trade_more_data") is not False or not (seen.get("session") or {}).get("trading_day"):
        fail("right password: no session / trade_more_data false within 5 s; frames: %s" % json.dumps(frames)[:3000])
    if any(n.get("level") == "ERROR" for n in notes):
        fail("right password: an ERROR notify: %s" % json.dumps(notes, ensure_ascii=False))
    ok("right password: session %s, trade_more_data false, notifies %s" % (
        json.dumps(seen["session"]), json.dumps([(n.get("level"), n.get("code"), n.get("content")) for n in notes],
                                                ensure_ascii=False)))
    for who, user, pw in (("wrong password", args.user, "wrong"), ("unknown user", "nobody-" + args.user, "x")):
        notes, keys, seen, frames = asyncio.run(raw_login(args.td, user, pw, 2))
        errors = [n for n in notes if n.get("level") == "ERROR"]
        if not errors:
            fail("%s: no ERROR notify within 2 s; frames: %s" % (who, json.dumps(frames, ensure_ascii=False)[:3000]))
        if keys:
            fail("%s: got trade/%s with %s; frames: %s" % (who, user, sorted(keys), json.dumps(frames)[:3000]))
        ok("%s: ERROR notify %s, no trade tree" % (
            who, json.dumps([(n.get("code"), n.get("content")) for n in errors], ensure_ascii=False)))


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", required=True, help="the server's HTTP base URL, http://127.0.0.1:PORT")
    ap.add_argument("--ws", help="the server's WebSocket base URL, ws://127.0.0.1:PORT (md: /md, td: /td)")
    ap.add_argument("--ins", help="tqsdk's _ins_url (default <http>/api/market/instruments/shinny)")
    ap.add_argument("--md", help="tqsdk's _md_url (default <ws>/md)")
    ap.add_argument("--td", help="tqsdk's _td_url (default <ws>/td)")
    ap.add_argument("--symbols", default="SHFE.cu2501", help="comma-separated DIFF symbols to trade")
    ap.add_argument("--only", choices=["trading", "login"], help="run one part (default: both)")
    ap.add_argument("--user", default="u1")
    ap.add_argument("--user2", default="u2")
    ap.add_argument("--password", default="pw1")
    ap.add_argument("--volume", type=int, default=2)
    ap.add_argument("--init-cash", type=float, default=1000000.0)
    ap.add_argument("--login-timeout", type=float, default=30.0, help="seconds TqApi() may take")
    ap.add_argument("--bad-login-wait", type=float, default=10.0, help="seconds to wait for the ERROR notify")
    ap.add_argument("--frames", help="write every frame tqsdk sends and receives to this JSON-lines file")
    ap.add_argument("--bad-login-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.ins = args.ins or args.http.rstrip("/") + "/api/market/instruments/shinny"
    if not (args.md and args.td) and not args.ws:
        ap.error("give --ws, or both --md and --td")
    args.md = args.md or args.ws.rstrip("/") + "/md"
    args.td = args.td or args.ws.rstrip("/") + "/td"
    args.symbols = [s for s in args.symbols.split(",") if s]
    args.good_password = args.password
    if args.frames:
        FRAMES["path"] = args.frames
        FRAMES["file"] = open(args.frames, "w", encoding="utf-8")

    if args.bad_login_child:
        bad_login_child(args)
        return 1  # not reached

    out("tqsdk %s, Python %s; ins %s md %s td %s; symbols %s" % (
        tqsdk.__version__, sys.version.split()[0], args.ins, args.md, args.td, ",".join(args.symbols)))
    install_tq_logging(args.md, args.td)
    rest = Rest(args.http)
    try:
        step("REST: the instruments file tqsdk fetches")
        try:
            r = requests.get(args.ins, timeout=10)
            ins = r.json()
        except (requests.RequestException, ValueError) as e:
            fail("GET %s: %s" % (args.ins, e))
        missing = [s for s in args.symbols if s not in ins]
        if r.status_code != 200 or missing:
            fail("GET %s -> %d, symbols missing: %s" % (args.ins, r.status_code, missing))
        ok("%d instruments, %s listed" % (len(ins), ",".join(args.symbols)))
        if args.only in (None, "trading"):
            trading(args, rest)
        if args.only in (None, "login"):
            if args.only == "login":  # the trading part opened the account otherwise
                rest.ok("POST", "/api/account/open", {"account_id": args.user, "init_cash": args.init_cash,
                                                      "password": args.password})
            login_checks(args, rest)
    except Failed as e:
        out("FAIL %s: %s" % (STEP["name"], e))
        show_frames()
        return 1
    if FAILED:
        out("scenario: %d checks passed, %d FAILED in %.1f s:" % (CHECKS["n"], len(FAILED), time.time() - T0))
        for f in FAILED:
            out("  FAILED " + f.split("\n")[0])
        return 1
    out("scenario: all %d checks passed in %.1f s" % (CHECKS["n"], time.time() - T0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
