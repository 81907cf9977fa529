#!/usr/bin/env python3
"""A throw-away DIFF server for checking tools/tqsdk/probe.py and for seeing what tqsdk sends.

Not the exchange: it only logs every frame it receives (one JSON line per frame on stdout) and,
in --mode minimal, answers just enough for tqsdk 1.8.3's TqApi() to return. Runs in the tqsdk
venv (it uses the same `websockets` 10.4). One port serves everything:

  GET  /symbols.json  (plain HTTP)  the instruments file for _ins_url (one instrument, SHFE.cu2501)
  ws   /md            market data connection
  ws   /td            trading connection (any path other than /md is treated as td)

  python tools/tqsdk/fake_diff_server.py --port 7788 --mode silent   # log only, never answer
  python tools/tqsdk/fake_diff_server.py --port 7788 --mode minimal  # log and answer (see below)

minimal: md: on each peek_message, one rtn_data (first: ins_list "" + mdhis_more_data false; later
ones only after a subscribe_quote, with a quote for each symbol). td: on connect the unprompted
rtn_brokers (tqsdk-js needs it; tqsdk-python ignores it); after req_login and a peek: the login
notify, session, an empty snapshot with trade_more_data false; wrong password: an ERROR notify.
"""
import argparse
import asyncio
import http
import json
import sys
import time

import websockets

INSTRUMENTS = {
    "SHFE.cu2501": {
        "class": "FUTURE", "instrument_id": "SHFE.cu2501", "exchange_id": "SHFE", "ins_id": "cu2501",
        "volume_multiple": 5, "price_tick": 10, "price_decs": 0, "expired": False, "product_id": "cu",
        "delivery_year": 2025, "delivery_month": 1, "expire_datetime": 1736900000.0,
        "max_limit_order_volume": 500, "margin": 16369.5, "commission": 11.69,
        "trading_time": {"day": [["09:00:00", "10:15:00"]], "night": []},
    }
}

T0 = time.time()


def log(**kw):
    kw = {"t": round(time.time() - T0, 3), **kw}
    print(json.dumps(kw, ensure_ascii=False), flush=True)


def short(headers):
    """Headers as a dict, long values (tqsdk's fixed Bearer token) cut to 40 characters."""
    return {k: (v if len(v) <= 40 else v[:40] + "...") for k, v in headers.items()}


async def process_request(path, headers):
    if path.split("?")[0].endswith(".json"):
        log(event="http_get", path=path, headers=short(headers))
        body = json.dumps(INSTRUMENTS).encode()
        return http.HTTPStatus.OK, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body
    return None  # go on with the WebSocket handshake


class Conn:
    def __init__(self, ws, kind, args):
        self.ws, self.kind, self.args = ws, kind, args
        self.pending = []      # patches not yet sent (sent one rtn_data per peek)
        self.peeked = False
        self.user = None

    async def push(self, *patches):
        self.pending.extend(patches)
        await self.flush()

    async def flush(self):
        if self.peeked and self.pending:
            msg = json.dumps({"aid": "rtn_data", "data": self.pending})
            self.pending, self.peeked = [], False
            log(conn=self.kind, dir="send", msg=json.loads(msg))
            await self.ws.send(msg)

    async def on_message(self, pack):
        aid = pack.get("aid")
        if aid == "peek_message":
            self.peeked = True
            await self.flush()
        elif self.kind == "md" and aid == "subscribe_quote":
            syms = [s for s in pack.get("ins_list", "").split(",") if s]
            quotes = {s: {"instrument_id": s, "datetime": "2024-12-02 14:59:59.999500", "last_price": 74000.0,
                          "ask_price1": 74010.0, "ask_volume1": 3, "bid_price1": 73990.0, "bid_volume1": 4,
                          "upper_limit": 80000.0, "lower_limit": 68000.0, "pre_settlement": 74000.0}
                      for s in syms if s in INSTRUMENTS}
            await self.push({"ins_list": pack.get("ins_list", ""), "quotes": quotes})
        elif self.kind == "td" and aid == "req_login":
            user = pack.get("user_name", "")
            if pack.get("password") != self.args.password:
                await self.push({"notify": {"login_err": {"type": "MESSAGE", "level": "ERROR", "code": 1,
                                                          "content": "登录失败: bad password"}}})
                return
            self.user = user
            await self.push(
                {"notify": {"login_ok": {"type": "MESSAGE", "level": "INFO", "code": 0, "content": "登录成功"}}},
                {"trade": {user: {"user_id": user, "session": {"user_id": user, "trading_day": "20241202"}}}},
                {"trade": {user: {"accounts": {"CNY": {"currency": "CNY", "pre_balance": 1e6, "static_balance": 1e6,
                                                       "balance": 1e6, "available": 1e6}},
                                  "positions": {}, "orders": {}, "trades": {}, "banks": {}, "transfers": {},
                                  "trade_more_data": False}}},
            )


async def handler(ws, path):
    args = handler.args
    kind = "md" if path.split("?")[0].rstrip("/").endswith("/md") else "td"
    log(event="connect", conn=kind, path=path, headers=short(ws.request_headers),
        extensions=[e.name for e in ws.extensions])
    c = Conn(ws, kind, args)
    if args.mode == "minimal":
        if kind == "md":
            c.pending.append({"ins_list": "", "mdhis_more_data": False})
        else:  # unprompted, before any peek: tqsdk-js waits for it (tqsdk-python just peeks again)
            msg = json.dumps({"aid": "rtn_brokers", "brokers": ["local"]})
            log(conn=kind, dir="send", msg=json.loads(msg))
            await ws.send(msg)
    try:
        async for raw in ws:
            pack = json.loads(raw)
            log(conn=kind, dir="recv", msg=pack)
            if args.mode == "minimal":
                await c.on_message(pack)
    except websockets.ConnectionClosed as e:
        log(event="closed", conn=kind, code=e.code)
    else:
        log(event="closed", conn=kind, code=ws.close_code)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7788)
    ap.add_argument("--mode", choices=["silent", "minimal"], default="minimal")
    ap.add_argument("--password", default="pw", help="the password req_login must carry (minimal mode)")
    args = ap.parse_args()
    handler.args = args
    async with websockets.serve(handler, args.host, args.port, process_request=process_request, max_size=None):
        log(event="listening", url=f"ws://{args.host}:{args.port}", mode=args.mode)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
