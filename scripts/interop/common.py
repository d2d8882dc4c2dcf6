"""Shared harness of the client interop checks (scripts/test-clients).

Each `client_*.py` exercises one real Binance client library against the two `acctstate sim`
processes that scripts/test-clients started, and records one result per (operation, market):
PASS, FAIL (with the reason), N/A (the client has no such thing, with why) or KNOWN (the client's
own assumption keeps it from passing; the id must be listed in KNOWN.md, with evidence).

The sims are described by environment variables (set by scripts/test-clients):
SIM_SPOT_REST, SIM_SPOT_WS (the WebSocket API URL), SIM_USDM_REST, SIM_USDM_WS (ws://host:port),
SIM_API_KEY, SIM_API_SECRET. Results go to the JSON file named by --out (or INTEROP_OUT).

Plain-HTTP cross-checks (`raw`, `raw_signed`) use urllib only, so they never share code with a
client under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from decimal import ROUND_DOWN, ROUND_UP, Decimal

SPOT, USDM = "spot", "usdm"
MARKETS = (SPOT, USDM)

# (key, label) in table order.
OPS = [
    ("account", "1 account"),
    ("open_orders", "2 open orders"),
    ("trades", "3 trades"),
    ("exchange_info", "4 exchange info"),
    ("user_stream", "5 user-data stream"),
    ("order_entry", "6 order place+cancel"),
    ("err_signature", "7a bad signature -1022"),
    ("err_unknown_key", "7b unknown key -2015"),
    ("err_bad_key", "7c malformed key -2014"),
    ("err_ws_api", "7d 7a-c on the WS API"),
]

# The three credential errors: (key, secret, Binance code, HTTP status); filled in by Results().
CREDENTIAL_CASES = []
WS_API_NA = ("USD-M user data is keyed by a listenKey from REST (POST /fapi/v1/listenKey); "
             "its credential errors are 7a-7c")

# A syntactically valid key (64 ASCII letters/digits, as Binance's) that the sim does not know,
# and one that is malformed.
UNKNOWN_KEY = "Zz" * 32
MALFORMED_KEY = "not-a-binance-key!"
WRONG_SECRET = "interopWrongSecret000000000000000000000000000000000000000000000"

# How long a stream check waits for events (the sims run at a few events per second).
EVENT_DEADLINE_S = float(os.environ.get("INTEROP_EVENT_DEADLINE", "8"))
# How long a client's stream is watched before a "delivers nothing" verdict.
DEAF_DEADLINE_S = float(os.environ.get("INTEROP_DEAF_DEADLINE", "6"))


class Sim:
    def __init__(self) -> None:
        env = os.environ
        self.rest = {SPOT: env["SIM_SPOT_REST"].rstrip("/"), USDM: env["SIM_USDM_REST"].rstrip("/")}
        self.spot_ws_api = env["SIM_SPOT_WS"]
        self.usdm_ws = env["SIM_USDM_WS"].rstrip("/")
        self.key = env["SIM_API_KEY"]
        self.secret = env["SIM_API_SECRET"]

    def ws_base(self, market: str) -> str:
        """ws://host:port of a market's sim."""
        return re.sub(r"^http", "ws", self.rest[market])


SIM = None  # set by Results()


# ----------------------------------------------------------------------------------- results


class Known(Exception):
    """The client cannot pass because of its own assumption (see KNOWN.md)."""

    def __init__(self, known_id: str, evidence: str):
        super().__init__(f"{known_id}: {evidence}")
        self.known_id = known_id
        self.evidence = evidence


class Results:
    before_check = None  # hook: called before each check (e.g. to reset per-check state)
    on_failure = None  # hook: called with the exception of a failed check

    def __init__(self, client: str):
        global SIM
        SIM = Sim()
        CREDENTIAL_CASES[:] = [(SIM.key, WRONG_SECRET, -1022, 400), (UNKNOWN_KEY, SIM.secret, -2015, 401),
                               (MALFORMED_KEY, SIM.secret, -2014, 401)]
        self.client = client
        self.rows: list[dict] = []
        out = None
        if "--out" in sys.argv:
            out = sys.argv[sys.argv.index("--out") + 1]
        self.out = out or os.environ.get("INTEROP_OUT")
        self.only = os.environ.get("INTEROP_ONLY")  # e.g. "user_stream" while debugging

    def _add(self, op, market, status, detail="", known_id=None, secs=0.0):
        row = {"client": self.client, "op": op, "market": market, "status": status,
               "detail": detail, "secs": round(secs, 2)}
        if known_id:
            row["known_id"] = known_id
        self.rows.append(row)
        line = f"[{self.client}] {op:<16} {market:<5} {status:<5} ({secs:.1f}s)"
        if detail and status != "N/A":
            line += " " + detail.splitlines()[0][: 300 if status != "PASS" else 160]
        print(line, flush=True)
        self.save()

    def na(self, op, market, why):
        self._add(op, market, "N/A", why)

    def _skip(self, op):
        return self.only and op not in self.only.split(",")

    def run(self, op, market, fn, *args):
        """Run a synchronous check."""
        if self._skip(op):
            return
        t0 = time.monotonic()
        if self.before_check:
            self.before_check()
        try:
            note = fn(*args)
            self._add(op, market, "PASS", note or "", secs=time.monotonic() - t0)
        except Known as k:
            self._add(op, market, "KNOWN", k.evidence, known_id=k.known_id, secs=time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - every failure is a FAIL row
            if self.on_failure:
                self.on_failure(e)
            self._add(op, market, "FAIL", describe(e), secs=time.monotonic() - t0)

    async def arun(self, op, market, coro_fn, *args, timeout=40.0):
        """Run an async check with a hard deadline."""
        if self._skip(op):
            return
        t0 = time.monotonic()
        if self.before_check:
            self.before_check()
        try:
            note = await asyncio.wait_for(coro_fn(*args), timeout)
            self._add(op, market, "PASS", note or "", secs=time.monotonic() - t0)
        except Known as k:
            self._add(op, market, "KNOWN", k.evidence, known_id=k.known_id, secs=time.monotonic() - t0)
        except asyncio.TimeoutError:
            self._add(op, market, "FAIL", f"check did not finish within {timeout:.0f}s",
                      secs=time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001
            if self.on_failure:
                self.on_failure(e)
            self._add(op, market, "FAIL", describe(e), secs=time.monotonic() - t0)

    def save(self):
        if self.out:
            tmp = self.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.rows, f, indent=1)
            os.replace(tmp, self.out)


def describe(e: BaseException) -> str:
    """An exception as one readable string: type, the client's own message, where it came from."""
    tb = traceback.extract_tb(e.__traceback__)
    where = ""
    for fr in reversed(tb):
        if "/scripts/interop/" in fr.filename:
            where = f" [at {os.path.basename(fr.filename)}:{fr.lineno}]"
            break
    attrs = []
    for a in ("status_code", "code", "error_message", "message"):
        v = getattr(e, a, None)
        if v is not None and not callable(v) and str(v) not in str(e):
            attrs.append(f"{a}={v!r}")
    for holder in (getattr(e, "request", None), getattr(e, "response", None)):
        url = getattr(holder, "url", None)
        if url:
            method = getattr(holder, "method", None) or getattr(getattr(e, "request", None), "method", "")
            attrs.append(f"url={method or ''} {urllib.parse.urlsplit(str(url)).path}".replace("= ", "="))
            break
    attrs += [str(n) for n in getattr(e, "__notes__", [])]
    extra = (" " + " ".join(attrs)) if attrs else ""
    return f"{type(e).__module__}.{type(e).__name__}: {e}{extra}{where}"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def source_of(obj) -> str:
    """file:line (function) of a function or class in the installed package, for evidence."""
    try:
        f = inspect.getsourcefile(obj)
        _, line = inspect.getsourcelines(obj)
        site = f.split("site-packages/")[-1]
        return f"{site}:{line} ({getattr(obj, '__qualname__', obj)})"
    except Exception:  # noqa: BLE001
        return repr(obj)


# ----------------------------------------------------------------------- plain REST (urllib)


class RawError(Exception):
    def __init__(self, status, body, what=""):
        super().__init__(f"sim REST {what} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


def _http(method, url, headers=None, data=None):
    what = f"{method} {urllib.parse.urlsplit(url).path}"
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            body = json.loads(body)
        except ValueError:
            pass
        raise RawError(e.code, body, what) from None


def raw(market, path, params=None):
    """A public GET on the sim."""
    q = ("?" + urllib.parse.urlencode(params)) if params else ""
    return _http("GET", SIM.rest[market] + path + q)


def raw_signed(market, method, path, params=None, key=None, secret=None):
    """A SIGNED request on the sim, HMAC-SHA256 over the query string."""
    p = dict(params or {})
    p["timestamp"] = int(time.time() * 1000)
    p.setdefault("recvWindow", 10000)
    q = urllib.parse.urlencode(p)
    sig = hmac.new((secret or SIM.secret).encode(), q.encode(), hashlib.sha256).hexdigest()
    url = f"{SIM.rest[market]}{path}?{q}&signature={sig}"
    return _http(method, url, headers={"X-MBX-APIKEY": key or SIM.key})


ACCOUNT_PATH = {SPOT: "/api/v3/account", USDM: "/fapi/v3/account"}
OPEN_ORDERS_PATH = {SPOT: "/api/v3/openOrders", USDM: "/fapi/v1/openOrders"}
TRADES_PATH = {SPOT: "/api/v3/myTrades", USDM: "/fapi/v1/userTrades"}
ORDER_PATH = {SPOT: "/api/v3/order", USDM: "/fapi/v1/order"}
INFO_PATH = {SPOT: "/api/v3/exchangeInfo", USDM: "/fapi/v1/exchangeInfo"}


def raw_account(market):
    return raw_signed(market, "GET", ACCOUNT_PATH[market])


def raw_open_orders(market, symbol=None):
    return raw_signed(market, "GET", OPEN_ORDERS_PATH[market], {"symbol": symbol} if symbol else None)


def raw_trades(market, symbol, limit=1000):
    return raw_signed(market, "GET", TRADES_PATH[market], {"symbol": symbol, "limit": limit})


def raw_order(market, symbol, client_order_id):
    return raw_signed(market, "GET", ORDER_PATH[market],
                      {"symbol": symbol, "origClientOrderId": client_order_id})


# ------------------------------------------------------------------------- projections


def spot_balances(balances):
    """{asset: (free, locked)} from Spot account balances (dicts with the wire names)."""
    return {b["asset"]: (b["free"], b["locked"]) for b in balances}


def usdm_assets(assets):
    return {a["asset"]: (a["walletBalance"], a["availableBalance"]) for a in assets}


def raw_account_projection(market):
    acc = raw_account(market)
    if market == SPOT:
        return spot_balances(acc["balances"])
    return usdm_assets(acc["assets"])


def order_projection(orders):
    """{orderId: (clientOrderId, status, executedQty)} from wire-named order dicts."""
    return {int(o["orderId"]): (o["clientOrderId"], o["status"], o["executedQty"]) for o in orders}


def consistent(raw_fn, client_fn, what, tries=8, nonempty=False):
    """Compare a client's view with the sim's own REST while the sim keeps trading.

    raw_fn() and client_fn() return comparable projections. The client's answer is taken between
    two identical raw snapshots (nothing changed in between), so any difference is the client's.
    Returns the agreed value. `nonempty`: an agreed empty value (the random session may have no
    open order at that instant) is asked again, for up to 20 s, so the check has something to
    compare."""
    last = None
    deadline = time.monotonic() + 20
    n = 0
    while n < tries or (nonempty and time.monotonic() < deadline):
        n += 1
        a = raw_fn()
        c = client_fn()
        b = raw_fn()
        if a == b:
            if c != a:
                raise AssertionError(f"{what}: client gave {c!r}, sim REST says {a!r}")
            if nonempty and not a and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            return a
        last = (a, c, b)
        time.sleep(0.05)
    a, c, b = last
    if c not in (a, b):
        raise AssertionError(f"{what}: the sim never held still; client gave {c!r}, sim REST "
                             f"said {a!r} then {b!r}")
    return c


def check_spot_decimal(s, what):
    check(isinstance(s, str) and re.fullmatch(r"-?\d+\.\d{8}", s),
          f"{what}: {s!r} is not the 8-decimal string the sim sends")


# ---------------------------------------------------------------------- order parameters


class OrderPlan:
    """A resting LIMIT BUY well inside the symbol's filters: ~3% under the recent trade price
    (inside USD-M's PERCENT_PRICE band of 5%), notional about 3x the minimum."""

    def __init__(self, market, symbol, price, qty, tick, step):
        self.market, self.symbol = market, symbol
        self.price, self.qty = price, qty
        self.tick, self.step = tick, step

    def __repr__(self):
        return f"LIMIT BUY {self.qty} {self.symbol} @ {self.price}"


def plan_order(market, symbol="BTCUSDT") -> OrderPlan:
    info = raw(market, INFO_PATH[market])
    sym = next(s for s in info["symbols"] if s["symbol"] == symbol)
    filters = {f["filterType"]: f for f in sym["filters"]}
    tick = Decimal(filters["PRICE_FILTER"]["tickSize"])
    step = Decimal(filters["LOT_SIZE"]["stepSize"])
    min_qty = Decimal(filters["LOT_SIZE"]["minQty"])
    nf = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    min_notional = Decimal(nf.get("minNotional") or nf.get("notional") or "5")
    trades = raw_trades(market, symbol, limit=5)
    if trades:
        ref = Decimal(trades[-1]["price"])
    else:
        orders = raw_open_orders(market, symbol)
        check(orders, f"no trade and no open order of {symbol} to take a reference price from")
        ref = Decimal(orders[-1]["price"])
    price = (ref * Decimal("0.97") / tick).to_integral_value(ROUND_DOWN) * tick
    qty = (min_notional * 3 / price / step).to_integral_value(ROUND_UP) * step
    qty = max(qty, min_qty)
    price = price.quantize(tick) if tick < 1 else price
    qty = qty.quantize(step) if step < 1 else qty
    return OrderPlan(market, symbol, price, qty, tick, step)


def client_order_id(tag: str) -> str:
    return f"interop{tag}{int(time.time() * 1000) % 10**9}{os.getpid() % 1000}"


# ---------------------------------------------------------------------------- waiting


async def wait_for(pred, deadline_s, what, interval=0.05):
    """Poll pred() (sync) until truthy or the deadline; returns its value."""
    end = time.monotonic() + deadline_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def assert_rest_order_state(market, symbol, coid, want_status, want_open):
    """The sim's own REST agrees: the order's status, and whether openOrders lists it."""
    o = raw_order(market, symbol, coid)
    eq(o["status"], want_status, f"sim REST {ORDER_PATH[market]} status of {coid}")
    listed = any(x["clientOrderId"] == coid for x in raw_open_orders(market, symbol))
    eq(listed, want_open, f"sim REST openOrders lists {coid}")
    return o


# ------------------------------------------------------------- USD-M deaf-stream evidence


def usdm_url_is_deaf(url: str) -> bool:
    """Production (and the sim) deliver no user-data payload on /ws/<key>, /private/ws/<key>, nor
    on /private/ws?listenKey=<key> without an `events=` list (ws mode)."""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    if re.search(r"/ws/[^/]+$", u.path):
        return True
    return u.path.endswith("/private/ws") and "listenKey" in q and "events" not in q


class ControlStream:
    """A plain aiohttp connection to the USD-M sim in the form production delivers on
    (/private/ws?listenKey=K&events=...): the sim's events flow while a client's stream is deaf."""

    EVENTS = "ORDER_TRADE_UPDATE/ACCOUNT_UPDATE/TRADE_LITE/ACCOUNT_CONFIG_UPDATE"

    def __init__(self, listen_key):
        self.url = f"{SIM.usdm_ws}/private/ws?listenKey={listen_key}&events={self.EVENTS}"
        self.events = []

    async def __aenter__(self):
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url, heartbeat=None)
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        async for msg in self.ws:
            if msg.type.name == "TEXT":
                self.events.append(json.loads(msg.data))

    async def __aexit__(self, *exc):
        self.task.cancel()
        await self.ws.close()
        await self.session.close()

    def order_event(self, order_id, x):
        return next((e for e in self.events if e.get("e") == "ORDER_TRADE_UPDATE"
                     and e["o"]["i"] == order_id and e["o"]["x"] == x), None)


def usdm_listen_key():
    return _http("POST", SIM.rest[USDM] + "/fapi/v1/listenKey",
                 headers={"X-MBX-APIKEY": SIM.key})["listenKey"]


def deaf_verdict(known_id, url, built_by, control, waited_s):
    """No event reached the client's stream: KNOWN if the client built a deaf URL while the sim
    was delivering on the production form, FAIL otherwise."""
    if usdm_url_is_deaf(url) and control.events:
        raise Known(known_id,
                    f"the client's user-data socket is {url} (built by {built_by}); production "
                    f"delivers no payload on that form, nor does the sim: 0 events in "
                    f"{waited_s:.0f}s there, while {len(control.events)} arrived on "
                    f"/private/ws?listenKey=K&events=... in the same window")
    raise AssertionError(f"no event on the client's stream {url} in {waited_s:.0f}s "
                         f"(control stream got {len(control.events)})")
