"""ccxt (ccxt.binance / ccxt.binanceusdm, and ccxt.pro for the user-data stream) against both sims.

Pointed at the sim the way ccxt documents for other endpoints: the exchange's `urls['api']`
entries (REST and `ws`) rewritten to the sim's host, keeping ccxt's own paths. Three exchange
options, all ccxt's own switches: `fetchCurrencies: False` (the wallet endpoint
/sapi/v1/capital/config/getall is no part of the sim; ccxt skips it the same way on testnet and
demo), `fetchMargins: False` (ccxt.pro would also load the margin pairs from /sapi) and, for
ccxt.binance, `fetchMarkets: {types: ['spot']}` (one exchangeInfo, not also the fapi/dapi
ones). Nothing of ccxt is patched.
"""

import asyncio
import re
import time

import ccxt
import ccxt.pro

import common as C
from common import SPOT, USDM, check, eq

CLIENT = "ccxt"
R = C.Results(CLIENT)
SIM = C.SIM
UNIFIED = {SPOT: "BTC/USDT", USDM: "BTC/USDT:USDT"}


def sim_urls(urls, market):
    """ccxt's urls['api'] with every host replaced by the market's sim (paths kept)."""
    http, ws = SIM.rest[market], SIM.ws_base(market)
    out = {}
    for k, v in urls.items():
        if isinstance(v, dict):
            out[k] = sim_urls(v, market)
        elif isinstance(v, str):
            out[k] = re.sub(r"^https://[^/]+", http, re.sub(r"^wss://[^/]+", ws, v))
        else:
            out[k] = v
    return out


MADE = []  # every exchange instance, to name the request behind a failure


def reset_last_urls():
    for ex in MADE:
        ex.last_request_url = None


def note_last_urls(e):
    urls = [f"{getattr(ex, 'id', '?')}: {ex.last_request_url.split('?')[0]}"
            for ex in MADE if ex.last_request_url]
    if urls and hasattr(e, "add_note"):
        e.add_note("[last ccxt request: " + "; ".join(urls[-2:]) + "]")


R.before_check = reset_last_urls
R.on_failure = note_last_urls


def make(market, pro=False, key=None, secret=None):
    mod = ccxt.pro if pro else ccxt
    cls = mod.binance if market == SPOT else mod.binanceusdm
    options = {"fetchCurrencies": False, "fetchMargins": False}
    if market == SPOT:
        options["fetchMarkets"] = {"types": ["spot"]}
    ex = cls({"apiKey": key or SIM.key, "secret": secret or SIM.secret, "options": options,
              "timeout": 5000, "enableRateLimit": False})
    ex.urls["api"] = sim_urls(ex.urls["api"], market)
    MADE.append(ex)
    return ex


EX = {SPOT: make(SPOT), USDM: make(USDM)}


def f(s):
    return float(s) if s is not None else None


def account(market):
    ex = EX[market]
    ex.load_markets()
    if market == SPOT:
        def raw():
            return {b["asset"]: (f(b["free"]), f(b["locked"])) for b in C.raw_account(SPOT)["balances"]}

        def mine():
            b = ex.fetch_balance()
            return {a: (b[a]["free"], b[a]["used"]) for a in raw_assets}
    else:
        def raw():
            return {a["asset"]: (f(a["availableBalance"]), f(a["marginBalance"]))
                    for a in C.raw_account(USDM)["assets"]}

        def mine():
            b = ex.fetch_balance()
            return {a: (b[a]["free"], b[a]["total"]) for a in raw_assets}
    raw_assets = list(raw())
    got = C.consistent(raw, mine, "balances (free, used/total)")
    check(len(got) >= 2, f"expected several balances: {got}")
    note = f"{len(got)} balances agree, e.g. {next(iter(got.items()))}"
    if market == USDM:
        # USD-M positions the ccxt way: fetch_positions() (positionRisk + leverage brackets).
        pos = C.consistent(
            lambda: {p["symbol"]: f(p["positionAmt"]) for p in C.raw_signed(USDM, "GET", "/fapi/v3/positionRisk")
                     if f(p["positionAmt"])},
            lambda: {p["info"]["symbol"]: f(p["info"]["positionAmt"]) for p in ex.fetch_positions()
                     if p["contracts"]},
            "positions (symbol: positionAmt)")
        note += f"; fetch_positions: {pos}"
    return note


def open_orders(market):
    ex = EX[market]
    ex.load_markets()
    sym = UNIFIED[market]

    def mine():
        return {int(o["id"]): (o["clientOrderId"], o["info"]["status"], o["info"]["executedQty"])
                for o in ex.fetch_open_orders(sym)}

    got = C.consistent(lambda: C.order_projection(C.raw_open_orders(market, "BTCUSDT")), mine, "open orders", nonempty=True)
    # And ccxt's unified fields agree with the raw ones.
    for o in ex.fetch_open_orders(sym):
        check(o["symbol"] == sym and o["status"] == "open", f"unified order {o['id']}: {o['symbol']} {o['status']}")
        eq(o["price"], f(o["info"]["price"]), f"order {o['id']} price")
        eq(o["amount"], f(o["info"]["origQty"]), f"order {o['id']} amount")
    return f"{len(got)} open {sym} orders agree"


def trades(market):
    ex = EX[market]
    ex.load_markets()
    raw = {str(t["id"]): t for t in C.raw_trades(market, "BTCUSDT")}
    mine = ex.fetch_my_trades(UNIFIED[market], limit=1000)
    check(mine, "fetch_my_trades returned nothing; the sim has trades")
    shared = [t for t in mine if t["id"] in raw]
    check(len(shared) >= len(mine) - 5, f"client trades {len(mine)}, shared with REST {len(shared)}")
    for t in shared:
        r = raw[t["id"]]
        eq(t["price"], f(r["price"]), f"trade {t['id']} price")
        eq(t["amount"], f(r["qty"]), f"trade {t['id']} amount")
        eq(t["cost"], f(r["quoteQty"]), f"trade {t['id']} cost")
        eq(t["order"], str(r["orderId"]), f"trade {t['id']} order")
        eq(t["timestamp"], r["time"], f"trade {t['id']} timestamp")
        eq(t["fee"]["cost"], f(r["commission"]), f"trade {t['id']} fee")
        buyer = r["isBuyer"] if market == SPOT else r["buyer"]
        eq(t["side"], "buy" if buyer else "sell", f"trade {t['id']} side")
    return f"{len(mine)} trades, values equal to the sim's"


def exchange_info(market):
    ex = make(market)  # a fresh instance: load_markets() really fetches
    st = ex.fetch_time()
    check(abs(st - time.time() * 1000) < 60_000, f"fetch_time {st}")
    markets = ex.load_markets()
    raw = C.raw(market, C.INFO_PATH[market])
    ids = sorted(m["id"] for m in markets.values())
    eq(ids, sorted(s["symbol"] for s in raw["symbols"]), "market ids")
    for rs in raw["symbols"]:
        m = ex.market(ex.safe_symbol(rs["symbol"], None, None, "spot" if market == SPOT else "swap"))
        fl = {x["filterType"]: x for x in rs["filters"]}
        eq(m["precision"]["price"], f(fl["PRICE_FILTER"]["tickSize"]), f"{rs['symbol']} precision.price")
        eq(m["precision"]["amount"], f(fl["LOT_SIZE"]["stepSize"]), f"{rs['symbol']} precision.amount")
        eq(m["limits"]["amount"]["min"], f(fl["LOT_SIZE"]["minQty"]), f"{rs['symbol']} limits.amount.min")
        notional = fl.get("NOTIONAL", {}).get("minNotional") or fl.get("MIN_NOTIONAL", {}).get("notional")
        eq(m["limits"]["cost"]["min"], f(notional), f"{rs['symbol']} limits.cost.min")
        eq((m["base"], m["quote"]), (rs["baseAsset"], rs["quoteAsset"]), f"{rs['symbol']} base/quote")
        check(m["active"], f"{rs['symbol']} not active")
    return f"fetch_time, {len(ids)} markets with precision/limits equal to the sim's filters"


# ---------------------------------------------------------------------------- streams


class Watch:
    """ccxt.pro watch_orders() in a background task, collecting every order update."""

    def __init__(self, market):
        self.market = market
        self.ex = make(market, pro=True)
        self.orders = []  # (id, clientOrderId, status, execution type x, market id)
        self.error = None

    async def __aenter__(self):
        try:
            await self.ex.load_markets()
        except BaseException:
            await self.ex.close()
            raise
        self.task = asyncio.ensure_future(self._loop())
        return self

    async def _loop(self):
        try:
            while True:
                for o in await self.ex.watch_orders():
                    info = o["info"]
                    x = info.get("x") if self.market == SPOT else (info.get("o") or info).get("x")
                    self.orders.append((o["id"], o["clientOrderId"], o["status"], x,
                                        self.ex.market(o["symbol"])["id"]))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.error = e

    def urls(self):
        return [u for u in self.ex.clients if u.startswith("ws")]

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except BaseException:  # noqa: BLE001
            pass
        await self.ex.close()

    def ready(self):
        if self.error:
            raise self.error
        return self.orders


def usdm_known(w, control, t0):
    url = next(iter(w.urls()), "(no socket)")
    C.deaf_verdict("ccxt-usdm-private-ws-no-events", url,
                   C.source_of(ccxt.pro.binance.get_private_ws_url) + " via "
                   + C.source_of(ccxt.pro.binance.watch_orders), control, time.monotonic() - t0)


async def user_stream(market):
    async with Watch(market) as w:
        if market == SPOT:
            new = await C.wait_for(lambda: next((o for o in w.ready() if o[3] == "NEW"), None),
                                   C.EVENT_DEADLINE_S, "a NEW order update from watch_orders()")
            oid, coid, status, x, mid = new
            o = C.raw_signed(SPOT, "GET", "/api/v3/order", {"symbol": mid, "orderId": oid})
            eq(coid, o["clientOrderId"], f"order {oid} clientOrderId")
            return f"{len(w.orders)} order updates via {w.urls()[0]}; order {mid} #{oid} matches REST"
        async with C.ControlStream(C.usdm_listen_key()) as control:
            t0 = time.monotonic()
            try:
                await C.wait_for(w.ready, C.DEAF_DEADLINE_S, "an order update from watch_orders()")
            except AssertionError:
                usdm_known(w, control, t0)
        return f"{len(w.orders)} order updates via {w.urls()}"


async def order_entry(market):
    plan = C.plan_order(market)
    coid = C.client_order_id("cx")
    sym = UNIFIED[market]
    async with Watch(market) as w:
        ex = w.ex
        control_cm = C.ControlStream(C.usdm_listen_key()) if market == USDM else None
        control = await control_cm.__aenter__() if control_cm else None
        t0 = time.monotonic()
        try:
            # watch_orders() must be subscribed before the order goes in: on Spot the first order
            # update proves it; on USD-M the socket is opened with the key in its URL.
            if market == SPOT:
                await C.wait_for(w.ready, C.EVENT_DEADLINE_S, "the first order update")
            else:
                await C.wait_for(lambda: w.urls() or w.error, C.EVENT_DEADLINE_S, "the user-data socket")
                await asyncio.sleep(0.3)
            placed = await ex.create_order(sym, "limit", "buy", float(plan.qty), float(plan.price),
                                           {"clientOrderId": coid, "timeInForce": "GTC"})
            eq(placed["clientOrderId"], coid, "create_order clientOrderId")
            eq(placed["status"], "open", "create_order status")
            eq(placed["price"], float(plan.price), "create_order price")
            eq(placed["amount"], float(plan.qty), "create_order amount")
            oid = placed["id"]
            C.assert_rest_order_state(market, plan.symbol, coid, "NEW", True)
            eq((await ex.fetch_order(oid, sym))["status"], "open", "fetch_order status")
            seen = lambda st: any(o[0] == oid and o[2] == st for o in w.orders)  # noqa: E731
            stream_ok = True
            try:
                await C.wait_for(lambda: w.ready() and seen("open"), C.EVENT_DEADLINE_S if market == SPOT
                                 else C.DEAF_DEADLINE_S, f"watch_orders() update 'open' of {oid}")
            except AssertionError:
                if market == SPOT:
                    raise
                stream_ok = False
            c = await ex.cancel_order(oid, sym)
            eq(c["status"], "canceled", "cancel_order status")
            C.assert_rest_order_state(market, plan.symbol, coid, "CANCELED", False)
            eq((await ex.fetch_order(oid, sym))["status"], "canceled", "fetch_order status after cancel")
            if market == USDM:
                await C.wait_for(lambda: control.order_event(int(oid), "NEW") and control.order_event(int(oid), "CANCELED"),
                                 C.EVENT_DEADLINE_S, f"the sim's NEW/CANCELED events of {oid}")
                if not stream_ok:
                    usdm_known(w, control, t0)
            await C.wait_for(lambda: w.ready() and seen("canceled"), C.EVENT_DEADLINE_S,
                             f"watch_orders() update 'canceled' of {oid}")
        finally:
            if control_cm:
                await control_cm.__aexit__(None, None, None)
    return f"{plan}: open and canceled via watch_orders(), REST agrees"


# ----------------------------------------------------------------------------- errors


def expect_error(market, key, secret, code):
    ex = make(market, key=key, secret=secret)
    ex.markets = EX[market].load_markets()  # markets are public; the error is the balance call's
    ex.markets_by_id = EX[market].markets_by_id
    ex.symbols = EX[market].symbols
    try:
        ex.fetch_balance()
    except ccxt.BaseError as e:
        exact = ex.get_exceptions_by_url(ex.last_request_url or "", "exact") or ex.exceptions["exact"]
        want = exact.get(str(code))
        check(want is not None, f"ccxt maps no exception for {code}")
        check(isinstance(e, want), f"{type(e).__name__} is not the {want.__name__} ccxt maps {code} to: {e}")
        check(f'"code":{code}' in str(e).replace(" ", ""), f"{code} not in the message: {e}")
        return f"{type(e).__name__}: {e}"
    raise AssertionError(f"fetch_balance succeeded; expected {code}")


async def ws_api_errors():
    """watch_orders() on Spot subscribes with userDataStream.subscribe.signature: each bad
    credential should surface as the exception ccxt maps its code to."""
    seen = []
    for key, secret, code, _ in C.CREDENTIAL_CASES:
        ex = make(SPOT, pro=True, key=key, secret=secret)
        try:
            await ex.load_markets()
            await asyncio.wait_for(ex.watch_orders(), 5)
            raise AssertionError(f"watch_orders() worked; expected {code}")
        except ccxt.AuthenticationError as e:
            check(f'"code":{code}' in str(e).replace(" ", ""), f"{code} not in {e}")
            seen.append(f"AuthenticationError {code}")
        except KeyError as e:
            ctx = e.__context__
            if isinstance(ctx, ccxt.AuthenticationError) and f'"code":{code}' in str(ctx).replace(" ", ""):
                raise C.Known(
                    "ccxt-spot-ws-auth-error-masked",
                    f"watch_orders() raised KeyError({e.args[0]!r}) instead of the "
                    f"{type(ctx).__name__} it built ({ctx}): "
                    f"{C.source_of(ccxt.pro.binance.handle_ws_error)} already deletes "
                    f"client.subscriptions['spot'], then the except of "
                    f"{C.source_of(ccxt.pro.binance.ensure_user_data_stream_ws_subscribe_signature)} "
                    f"deletes it again") from None
            raise
        finally:
            await ex.close()
    return "watch_orders() raised " + ", ".join(seen)


BACKGROUND_ERRORS = []


def background_error(loop, context):
    """ccxt.pro runs snapshots (e.g. the USD-M positions snapshot of watch_orders) as background
    tasks; their failures are reported here in one line instead of asyncio's traceback."""
    e = context.get("exception")
    msg = f"{type(e).__name__}: {e}" if e else context.get("message")
    urls = [ex.last_request_url.split("?")[0] for ex in MADE if ex.last_request_url]
    if urls:
        msg += f" [last ccxt request: {urls[-1]}]"
    BACKGROUND_ERRORS.append(msg)
    print(f"[ccxt] background task failed: {msg}", flush=True)


async def main():
    asyncio.get_running_loop().set_exception_handler(background_error)
    for m in (SPOT, USDM):
        R.run("account", m, account, m)
        R.run("open_orders", m, open_orders, m)
        R.run("trades", m, trades, m)
        R.run("exchange_info", m, exchange_info, m)
        await R.arun("user_stream", m, user_stream, m)
        await R.arun("order_entry", m, order_entry, m)
        R.run("err_signature", m, expect_error, m, SIM.key, C.WRONG_SECRET, -1022)
        R.run("err_unknown_key", m, expect_error, m, C.UNKNOWN_KEY, SIM.secret, -2015)
        R.run("err_bad_key", m, expect_error, m, C.MALFORMED_KEY, SIM.secret, -2014)
        if m == SPOT:
            await R.arun("err_ws_api", m, ws_api_errors)
        else:
            R.na("err_ws_api", m, C.WS_API_NA)


if __name__ == "__main__":
    asyncio.run(main())
