"""python-binance (sammchardy/python-binance) against both sims.

python-binance has no base-URL option (only `tld`, `testnet`, `demo`): its endpoints are the
public class constants API_URL / FUTURES_URL / WS_API_URL (Client, AsyncClient) and STREAM_URL /
FSTREAM_URL (BinanceSocketManager), which the maintainers point users to for other endpoints
(python-binance issue #453). So the only override here: subclasses that set those URL constants
to the sim. No method of the library is replaced.

Spot user data: BinanceSocketManager.user_socket(), which subscribes on the WebSocket API
(userDataStream.subscribe.signature). USD-M: futures_user_socket() (listenKey).
"""

import asyncio
import time
from decimal import Decimal

from binance import AsyncClient, BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException
from binance.ws.keepalive_websocket import KeepAliveWebsocket

import common as C
from common import SPOT, USDM, check, eq

CLIENT = "python-binance"
R = C.Results(CLIENT)
SIM = C.SIM

URLS = {
    "API_URL": SIM.rest[SPOT] + "/api",
    "FUTURES_URL": SIM.rest[USDM] + "/fapi",
    "WS_API_URL": SIM.spot_ws_api,
}
SimClient = type("SimClient", (Client,), dict(URLS))
SimAsyncClient = type("SimAsyncClient", (AsyncClient,), dict(URLS))
SimSocketManager = type("SimSocketManager", (BinanceSocketManager,), {
    "STREAM_URL": C.SIM.ws_base(SPOT) + "/",
    "FSTREAM_URL": SIM.usdm_ws + "/",
})

# ping=False: the constructor's ping is checked on its own (exchange info row).
CL = SimClient(SIM.key, SIM.secret, ping=False)
ASYNC = {}


def async_client():
    """One AsyncClient (and socket manager) for the whole run, as an application would hold it.
    (Closing one takes python-binance up to its 10 s read timeout, so it is closed once, at the end.)"""
    if not ASYNC:
        a = SimAsyncClient(SIM.key, SIM.secret)
        ASYNC["client"], ASYNC["bm"] = a, SimSocketManager(a)
    return ASYNC["client"], ASYNC["bm"]


def account(market):
    if market == SPOT:
        got = C.consistent(lambda: C.raw_account_projection(SPOT),
                           lambda: C.spot_balances(CL.get_account()["balances"]), "balances")
        check(len(got) >= 2, f"expected several balances, got {got}")
        for asset, (free, locked) in got.items():
            C.check_spot_decimal(free, f"{asset} free")
            C.check_spot_decimal(locked, f"{asset} locked")
        return f"{len(got)} balances agree, e.g. {next(iter(got.items()))}"
    # USD-M: python-binance's three account calls, each checked (every failure is reported).
    problems, notes = [], []

    def sub(name, fn):
        try:
            notes.append(f"{name}: {fn()}")
        except BinanceAPIException as e:
            problems.append(f"{name} -> {C.describe(e)}")
        except AssertionError as e:
            problems.append(f"{name} -> {e}")

    def v2_account():
        got = C.consistent(lambda: C.raw_account_projection(USDM),
                           lambda: C.usdm_assets(CL.futures_account()["assets"]), "assets")
        return f"{len(got)} assets agree"

    def balance():
        raw = lambda: {a["asset"]: a["walletBalance"] for a in C.raw_account(USDM)["assets"]}  # noqa: E731
        got = C.consistent(raw, lambda: {b["asset"]: b["balance"] for b in CL.futures_account_balance()},
                           "balance vs walletBalance")
        return f"{len(got)} balances agree"

    def positions():
        got = C.consistent(
            lambda: {p["symbol"]: p["positionAmt"] for p in C.raw_signed(USDM, "GET", "/fapi/v3/positionRisk")},
            lambda: {p["symbol"]: p["positionAmt"] for p in CL.futures_position_information()},
            "positionRisk")
        check(got, "no position")
        return f"{len(got)} positions agree"

    sub("futures_account()", v2_account)
    sub("futures_account_balance()", balance)
    sub("futures_position_information()", positions)
    if problems:
        try:
            CL.futures_account(version=3)
            problems.append("(futures_account(version=3), GET /fapi/v3/account, does work: the sim "
                            "serves the v3 account only)")
        except BinanceAPIException:
            pass
        raise AssertionError("; ".join(problems) + (" | passed: " + "; ".join(notes) if notes else ""))
    return "; ".join(notes)


def open_orders(market):
    fn = CL.get_open_orders if market == SPOT else CL.futures_get_open_orders
    got = C.consistent(lambda: C.order_projection(C.raw_open_orders(market)),
                       lambda: C.order_projection(fn()), "open orders", nonempty=True)
    check(got, "the sim has open orders, the client listed none")
    return f"{len(got)} open orders agree"


def trades(market):
    raw = {t["id"]: t for t in C.raw_trades(market, "BTCUSDT")}
    fn = CL.get_my_trades if market == SPOT else CL.futures_account_trades
    mine = fn(symbol="BTCUSDT", limit=1000)
    check(mine, "no trade returned; the sim has some")
    shared = [t for t in mine if t["id"] in raw]
    check(len(shared) >= len(mine) - 5, f"client trades {len(mine)}, shared with REST {len(shared)}")
    for t in shared:
        eq(t, raw[t["id"]], f"trade {t['id']}")
    return f"{len(mine)} trades, equal to the sim's"


def exchange_info(market):
    if market == SPOT:
        SimClient(SIM.key, SIM.secret)  # the constructor pings (GET /api/v3/ping)
        st = CL.get_server_time()
        info = CL.get_exchange_info()
        sym = CL.get_symbol_info("BTCUSDT")
    else:
        CL.futures_ping()
        st = CL.futures_time()
        info = CL.futures_exchange_info()
        sym = next((s for s in info["symbols"] if s["symbol"] == "BTCUSDT"), None)
    check(abs(st["serverTime"] - time.time() * 1000) < 60_000, f"serverTime {st}")
    raw = C.raw(market, C.INFO_PATH[market])
    eq([s["symbol"] for s in info["symbols"]], [s["symbol"] for s in raw["symbols"]], "symbols")
    raw_btc = next(s for s in raw["symbols"] if s["symbol"] == "BTCUSDT")
    check(sym is not None, "BTCUSDT not found by the client")
    eq(sym["filters"], raw_btc["filters"], "BTCUSDT filters")
    return f"ping, time, {len(info['symbols'])} symbols, BTCUSDT filters equal to the sim's"


# ---------------------------------------------------------------------------- streams


async def spot_socket_events(sock, events, stop):
    while not stop.is_set():
        try:
            events.append(await asyncio.wait_for(sock.recv(), 0.5))
        except asyncio.TimeoutError:
            pass


async def user_stream(market):
    a, bm = async_client()
    events, stop = [], asyncio.Event()
    if market == SPOT:
        async with bm.user_socket() as sock:
            t = asyncio.ensure_future(spot_socket_events(sock, events, stop))
            er = await C.wait_for(lambda: next((e for e in events if e.get("e") == "executionReport"), None),
                                  C.EVENT_DEADLINE_S, "an executionReport")
            stop.set()
            await t
        o = C.raw_signed(SPOT, "GET", "/api/v3/order", {"symbol": er["s"], "orderId": er["i"]})
        eq(er["c"] if er["x"] != "CANCELED" else er["C"], o["clientOrderId"], f"order {er['i']} clientOrderId")
        kinds = sorted({e.get("e") for e in events})
        return f"{len(events)} events ({', '.join(kinds)}); executionReport #{er['i']} matches REST"
    return await usdm_user_stream(bm, events, stop)


async def usdm_user_stream(bm, events, stop, order_flow=None):
    """futures_user_socket(); with order_flow, an order is placed and cancelled meanwhile and
    its NEW / CANCELED events are expected on the client's socket."""
    sock = bm.futures_user_socket()
    async with sock:
        url = f"{sock._url}{sock._prefix}{sock._path}"
        async with C.ControlStream(sock._listen_key) as control:
            t = asyncio.ensure_future(spot_socket_events(sock, events, stop))
            t0 = time.monotonic()
            try:
                note, oid = (await order_flow(control)) if order_flow else (None, None)
                real = lambda: [e for e in events if e.get("e") != "listenKeyExpired"]  # noqa: E731
                try:
                    await C.wait_for(real, C.DEAF_DEADLINE_S, "a user-data event")
                except AssertionError:
                    C.deaf_verdict("python-binance-usdm-user-socket", url,
                                   C.source_of(KeepAliveWebsocket._build_path) + " via "
                                   + C.source_of(BinanceSocketManager.futures_user_socket),
                                   control, time.monotonic() - t0)
                if oid is not None:
                    for x in ("NEW", "CANCELED"):
                        await C.wait_for(
                            lambda: any(e.get("e") == "ORDER_TRADE_UPDATE" and e["o"]["i"] == oid
                                        and e["o"]["x"] == x for e in events),
                            C.EVENT_DEADLINE_S, f"ORDER_TRADE_UPDATE {x} of {oid} on {url}")
            finally:
                stop.set()
                await t
    return note or f"{len(events)} events on {url}"


async def order_entry(market):
    plan = C.plan_order(market)
    coid = C.client_order_id("pb")
    a, bm = async_client()
    events, stop = [], asyncio.Event()
    if market == SPOT:
        async with bm.user_socket() as sock:
            t = asyncio.ensure_future(spot_socket_events(sock, events, stop))
            try:
                note = await spot_order_flow(a, plan, coid, lambda: events)
            finally:
                stop.set()
                await t
        return note

    async def flow(control):
        return await usdm_order_flow(a, plan, coid, control)

    return await usdm_user_stream(bm, events, stop, order_flow=flow)


async def spot_order_flow(a, plan, coid, events):
    await C.wait_for(events, C.EVENT_DEADLINE_S, "the first event on user_socket()")
    placed = await a.create_order(symbol=plan.symbol, side="BUY", type="LIMIT", timeInForce="GTC",
                                  quantity=str(plan.qty), price=str(plan.price), newClientOrderId=coid)
    eq(placed["clientOrderId"], coid, "create_order clientOrderId")
    eq(placed["status"], "NEW", "create_order status")
    eq(placed["price"], f"{plan.price:.8f}", "create_order price")
    oid = placed["orderId"]
    find = lambda x: next((e for e in events() if e.get("e") == "executionReport"  # noqa: E731
                           and e["i"] == oid and e["x"] == x), None)
    ev = await C.wait_for(lambda: find("NEW"), C.EVENT_DEADLINE_S, f"executionReport NEW of {oid}")
    eq(ev["c"], coid, "NEW event clientOrderId")
    C.assert_rest_order_state(SPOT, plan.symbol, coid, "NEW", True)
    eq((await a.get_order(symbol=plan.symbol, orderId=oid))["status"], "NEW", "client get_order")
    c = await a.cancel_order(symbol=plan.symbol, orderId=oid)
    eq(c["status"], "CANCELED", "cancel_order status")
    ev = await C.wait_for(lambda: find("CANCELED"), C.EVENT_DEADLINE_S, f"executionReport CANCELED of {oid}")
    eq(ev["C"], coid, "CANCELED event origClientOrderId")
    C.assert_rest_order_state(SPOT, plan.symbol, coid, "CANCELED", False)
    eq((await a.get_order(symbol=plan.symbol, orderId=oid))["status"], "CANCELED", "client get_order")
    check(all(o["orderId"] != oid for o in await a.get_open_orders(symbol=plan.symbol)),
          "client get_open_orders still lists the cancelled order")
    return f"{plan}: NEW and CANCELED on the stream, REST agrees"


async def usdm_order_flow(a, plan, coid, control):
    """REST part of the USD-M order check; the sim's events are checked on the control stream
    (the client's own stream is judged by deaf_verdict afterwards)."""
    placed = await a.futures_create_order(symbol=plan.symbol, side="BUY", type="LIMIT", timeInForce="GTC",
                                          quantity=str(plan.qty), price=str(plan.price),
                                          newClientOrderId=coid)
    eq(placed["clientOrderId"], coid, "futures_create_order clientOrderId")
    eq(placed["status"], "NEW", "futures_create_order status")
    eq(Decimal(placed["price"]), plan.price, "futures_create_order price")
    oid = placed["orderId"]
    await C.wait_for(lambda: control.order_event(oid, "NEW"), C.EVENT_DEADLINE_S, f"sim event NEW of {oid}")
    C.assert_rest_order_state(USDM, plan.symbol, coid, "NEW", True)
    eq((await a.futures_get_order(symbol=plan.symbol, orderId=oid))["status"], "NEW", "futures_get_order")
    c = await a.futures_cancel_order(symbol=plan.symbol, orderId=oid)
    eq(c["status"], "CANCELED", "futures_cancel_order status")
    await C.wait_for(lambda: control.order_event(oid, "CANCELED"), C.EVENT_DEADLINE_S,
                     f"sim event CANCELED of {oid}")
    C.assert_rest_order_state(USDM, plan.symbol, coid, "CANCELED", False)
    eq((await a.futures_get_order(symbol=plan.symbol, orderId=oid))["status"], "CANCELED", "futures_get_order")
    return f"{plan}: REST and the sim's events agree", oid


# ----------------------------------------------------------------------------- errors


def expect_error(market, key, secret, code, http):
    cl = SimClient(key, secret, ping=False)
    try:
        cl.get_account() if market == SPOT else cl.futures_account(version=3)
    except BinanceAPIException as e:
        eq(e.code, code, "BinanceAPIException.code")
        eq(e.status_code, http, "BinanceAPIException.status_code (HTTP)")
        return f"BinanceAPIException(code={e.code}, status_code={e.status_code}, {e.message!r})"
    raise AssertionError(f"the call succeeded; expected BinanceAPIException {code}")


async def ws_api_errors():
    """user_socket() subscribes with userDataStream.subscribe.signature: each bad credential
    surfaces as BinanceAPIException with the WS API's code and status."""
    seen = []
    for key, secret, code, http in C.CREDENTIAL_CASES:
        a = SimAsyncClient(key, secret)
        try:
            async with SimSocketManager(a).user_socket() as sock:
                await asyncio.wait_for(sock.recv(), 2)
            raise AssertionError(f"user_socket() worked; expected {code}")
        except BinanceAPIException as e:
            eq(e.code, code, "BinanceAPIException.code")
            eq(e.status_code, http, "BinanceAPIException.status_code")
            seen.append(f"{e.code}/{e.status_code}")
        finally:
            # python-binance's close waits out its 10 s read timeout; the socket is done with.
            try:
                await asyncio.wait_for(a.close_connection(), 1)
            except asyncio.TimeoutError:
                pass
    return "user_socket() raised BinanceAPIException " + ", ".join(seen)


async def main():
    for m in (SPOT, USDM):
        R.run("account", m, account, m)
        R.run("open_orders", m, open_orders, m)
        R.run("trades", m, trades, m)
        R.run("exchange_info", m, exchange_info, m)
        await R.arun("user_stream", m, user_stream, m)
        await R.arun("order_entry", m, order_entry, m)
        R.run("err_signature", m, expect_error, m, SIM.key, C.WRONG_SECRET, -1022, 400)
        R.run("err_unknown_key", m, expect_error, m, C.UNKNOWN_KEY, SIM.secret, -2015, 401)
        R.run("err_bad_key", m, expect_error, m, C.MALFORMED_KEY, SIM.secret, -2014, 401)
        if m == SPOT:
            await R.arun("err_ws_api", m, ws_api_errors)
        else:
            R.na("err_ws_api", m, C.WS_API_NA)
    if ASYNC:
        try:
            await asyncio.wait_for(ASYNC["client"].close_connection(), 15)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
