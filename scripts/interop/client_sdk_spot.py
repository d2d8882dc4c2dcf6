"""binance-sdk-spot (Binance's official Spot SDK) against the Spot sim.

Configured as its README documents: ConfigurationRestAPI(base_path=...) for REST and
ConfigurationWebSocketAPI(stream_url=...) for the WebSocket API, which carries the user-data
stream (userDataStream.subscribe.signature). Nothing of the SDK is patched.
"""

import asyncio
import logging
import time

from binance_common.errors import BadRequestError, UnauthorizedError
from binance_sdk_spot.rest_api.models import (
    NewOrderSideEnum,
    NewOrderTimeInForceEnum,
    NewOrderTypeEnum,
)
from binance_sdk_spot.spot import ConfigurationRestAPI, ConfigurationWebSocketAPI, Spot

import common as C
from common import SPOT, USDM, check, eq

CLIENT = "binance-sdk-spot"
R = C.Results(CLIENT)
SIM = C.SIM


class ModelFallback(logging.Handler):
    """The SDK logs (and returns the raw payload) when a response does not fit its model."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        msg = record.getMessage()
        if "did not match" in msg or "Failed to parse" in msg:
            self.messages.append(msg)


FALLBACK = ModelFallback()
logging.getLogger().addHandler(FALLBACK)


def no_fallback(what):
    if FALLBACK.messages:
        msgs = list(FALLBACK.messages)
        FALLBACK.messages.clear()
        raise AssertionError(f"{what}: the SDK could not parse the sim's payload into its model: {msgs[0]}")


def client(key=None, secret=None):
    return Spot(
        config_rest_api=ConfigurationRestAPI(
            api_key=key or SIM.key, api_secret=secret or SIM.secret,
            base_path=SIM.rest[SPOT], timeout=5000, retries=0),
        config_ws_api=ConfigurationWebSocketAPI(
            api_key=key or SIM.key, api_secret=secret or SIM.secret,
            stream_url=SIM.spot_ws_api, reconnect_attempts=1),
    )


CL = client()


def unwrap(x):
    return getattr(x, "actual_instance", None) or x


# --------------------------------------------------------------------------------- REST


def account():
    def mine():
        d = CL.rest_api.get_account().data()
        no_fallback("get_account")
        check(type(d).__name__ == "GetAccountResponse", f"get_account returned {type(d).__name__}")
        return C.spot_balances([b.to_dict() for b in d.balances])

    bal = C.consistent(lambda: C.raw_account_projection(SPOT), mine, "balances")
    check(len(bal) >= 2, f"expected several balances, got {bal}")
    for asset, (free, locked) in bal.items():
        C.check_spot_decimal(free, f"{asset} free")
        C.check_spot_decimal(locked, f"{asset} locked")
    return f"{len(bal)} balances, e.g. {next(iter(bal.items()))}"


def open_orders():
    def mine():
        d = CL.rest_api.get_open_orders().data()
        no_fallback("get_open_orders")
        return C.order_projection([o.to_dict() for o in d])

    got = C.consistent(lambda: C.order_projection(C.raw_open_orders(SPOT)), mine, "open orders", nonempty=True)
    check(got, "the sim has open orders, the client listed none")
    return f"{len(got)} open orders agree"


def trades():
    raw = {t["id"]: t for t in C.raw_trades(SPOT, "BTCUSDT")}
    d = CL.rest_api.my_trades(symbol="BTCUSDT", limit=1000).data()
    no_fallback("my_trades")
    check(d, "my_trades(BTCUSDT) returned no trade; the sim has some")
    common_ids = [t.id for t in d if t.id in raw]
    check(len(common_ids) >= len(d) - 5, f"client trades {len(d)}, shared with REST {len(common_ids)}")
    for t in d:
        r = raw.get(t.id)
        if r is None:
            continue
        for attr, key in (("price", "price"), ("qty", "qty"), ("quote_qty", "quoteQty"),
                          ("commission", "commission"), ("commission_asset", "commissionAsset"),
                          ("order_id", "orderId"), ("is_buyer", "isBuyer"), ("is_maker", "isMaker"),
                          ("time", "time")):
            eq(getattr(t, attr), r[key], f"trade {t.id} {key}")
    return f"{len(d)} trades, values equal to the sim's"


def exchange_info():
    CL.rest_api.ping().data()
    st = CL.rest_api.time().data()
    check(abs(st.server_time - time.time() * 1000) < 60_000, f"serverTime {st.server_time}")
    raw = C.raw(SPOT, C.INFO_PATH[SPOT])
    resp = CL.rest_api.exchange_info()
    d = resp.data()
    used = [r for r in resp.rate_limits if r.rateLimitType == "REQUEST_WEIGHT" and r.interval == "MINUTE"]
    check(used and used[0].count > 0,
          f"the SDK's rate_limits (from X-MBX-USED-WEIGHT-1M) show no used weight: {resp.rate_limits}")
    no_fallback("exchange_info")
    names = [s.symbol for s in d.symbols]
    eq(names, [s["symbol"] for s in raw["symbols"]], "symbols")
    check("BTCUSDT" in names, f"BTCUSDT not among {names}")
    for s, rs in zip(d.symbols, raw["symbols"]):
        rf = {f["filterType"]: f for f in rs["filters"]}
        filters = {unwrap(f).filter_type: unwrap(f) for f in s.filters}
        pf, ls = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
        check(pf is not None and ls is not None, f"{s.symbol}: PRICE_FILTER/LOT_SIZE missing: {list(filters)}")
        eq(pf.tick_size, rf["PRICE_FILTER"]["tickSize"], f"{s.symbol} tickSize")
        eq(ls.step_size, rf["LOT_SIZE"]["stepSize"], f"{s.symbol} stepSize")
        eq(ls.min_qty, rf["LOT_SIZE"]["minQty"], f"{s.symbol} minQty")
        eq(s.base_asset, rs["baseAsset"], f"{s.symbol} baseAsset")
        eq(s.quote_asset, rs["quoteAsset"], f"{s.symbol} quoteAsset")
    return f"ping, time, used weight {used[0].count}, {len(names)} symbols with PRICE_FILTER/LOT_SIZE equal to the sim's"


# ---------------------------------------------------------------------------- streams


class Stream:
    """The SDK's user-data stream on the WebSocket API, collecting parsed events."""

    def __init__(self):
        self.events = []  # the parsed event models (actual instances)
        self.conn = None

    async def __aenter__(self):
        self.conn = await CL.websocket_api.create_connection()
        res = await self.conn.user_data_stream_subscribe_signature()
        sub = res.response.data().result.subscription_id
        check(isinstance(sub, int), f"subscriptionId {sub!r}")
        res.stream.on("message", lambda m: self.events.append(unwrap(m)))
        await C.wait_for(lambda: self.events, C.EVENT_DEADLINE_S, "the first event after subscribing")
        return self

    async def __aexit__(self, *exc):
        try:
            await self.conn.close_connection(close_session=True)
        except Exception:  # noqa: BLE001
            pass

    def find(self, pred):
        return next((e for e in self.events if pred(e)), None)


def ev_type(e):
    """The event type; the SDK's models drop `e` (their oneOf discriminator), so by model class."""
    name = type(e).__name__
    return getattr(e, "e", None) or (name[:1].lower() + name[1:])


async def user_stream():
    async with Stream() as s:
        await C.wait_for(lambda: s.events, C.EVENT_DEADLINE_S, "a user-data event")
        er = await C.wait_for(lambda: s.find(lambda e: ev_type(e) == "executionReport"),
                              C.EVENT_DEADLINE_S, "an executionReport")
        kinds = sorted({type(e).__name__ for e in s.events})
    # The event names an order the sim's REST knows, with the same client order id.
    o = C.raw_signed(SPOT, "GET", "/api/v3/order", {"symbol": er.s, "orderId": er.i})
    eq(er.c if er.x != "CANCELED" else er.C, o["clientOrderId"], f"order {er.i} clientOrderId")
    check(er.X in ("NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"), f"status {er.X}")
    return f"{len(s.events)} events parsed ({', '.join(kinds)}); executionReport {er.s} #{er.i} matches REST"


async def order_entry():
    plan = C.plan_order(SPOT)
    coid = C.client_order_id("sdk")
    async with Stream() as s:
        placed = CL.rest_api.new_order(
            symbol=plan.symbol, side=NewOrderSideEnum.BUY, type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC, quantity=plan.qty, price=plan.price,
            new_client_order_id=coid).data()
        no_fallback("new_order")
        eq(placed.client_order_id, coid, "new_order clientOrderId")
        eq(placed.status, "NEW", "new_order status")
        eq(placed.price, f"{plan.price:.8f}", "new_order price")
        eq(placed.orig_qty, f"{plan.qty:.8f}", "new_order origQty")
        oid = placed.order_id
        new_ev = await C.wait_for(
            lambda: s.find(lambda e: ev_type(e) == "executionReport" and e.i == oid and e.x == "NEW"),
            C.EVENT_DEADLINE_S, f"executionReport NEW of order {oid}")
        eq(new_ev.c, coid, "NEW event clientOrderId")
        eq(new_ev.p, f"{plan.price:.8f}", "NEW event price")
        C.assert_rest_order_state(SPOT, plan.symbol, coid, "NEW", True)
        mine = CL.rest_api.get_order(symbol=plan.symbol, order_id=oid).data()
        eq(mine.status, "NEW", "client get_order status")

        cancelled = CL.rest_api.delete_order(symbol=plan.symbol, order_id=oid).data()
        no_fallback("delete_order")
        eq(cancelled.status, "CANCELED", "delete_order status")
        eq(cancelled.orig_client_order_id, coid, "delete_order origClientOrderId")
        cev = await C.wait_for(
            lambda: s.find(lambda e: ev_type(e) == "executionReport" and e.i == oid and e.x == "CANCELED"),
            C.EVENT_DEADLINE_S, f"executionReport CANCELED of order {oid}")
        eq(cev.C, coid, "CANCELED event origClientOrderId (C)")
        C.assert_rest_order_state(SPOT, plan.symbol, coid, "CANCELED", False)
        mine = CL.rest_api.get_order(symbol=plan.symbol, order_id=oid).data()
        eq(mine.status, "CANCELED", "client get_order status after cancel")
        open_ids = [o.order_id for o in CL.rest_api.get_open_orders(symbol=plan.symbol).data()]
        check(oid not in open_ids, "client get_open_orders still lists the cancelled order")
    return f"{plan}: NEW and CANCELED on the stream, REST agrees"


# ----------------------------------------------------------------------------- errors


def expect_error(cl, exc_type, code):
    try:
        cl.rest_api.get_account()
    except exc_type as e:
        # The SDK puts Binance's error code in `status_code` (binance_common.utils.send_request).
        eq(e.status_code, code, f"{exc_type.__name__}.status_code (Binance code)")
        return f"{exc_type.__name__}(status_code={e.status_code}, {e.error_message!r})"
    raise AssertionError(f"get_account succeeded; expected {exc_type.__name__} {code}")


async def ws_api_errors():
    """userDataStream.subscribe.signature with each bad credential: the SDK raises ValueError
    carrying the WS API's error object."""
    seen = []
    for key, secret, code, _ in C.CREDENTIAL_CASES:
        conn = await client(key=key, secret=secret).websocket_api.create_connection()
        try:
            await conn.user_data_stream_subscribe_signature()
            raise AssertionError(f"subscribe succeeded; expected {code}")
        except ValueError as e:
            body = e.args[0] if e.args else None
            got = body.get("error", {}).get("code") if isinstance(body, dict) else None
            eq(got, code, f"ValueError error.code ({e})")
            seen.append(f"{code}")
        finally:
            await conn.close_connection(close_session=True)
    return "user_data_stream_subscribe_signature raised ValueError({'error': {'code': " + "/".join(seen) + "}})"


async def main():
    R.run("account", SPOT, account)
    R.run("open_orders", SPOT, open_orders)
    R.run("trades", SPOT, trades)
    R.run("exchange_info", SPOT, exchange_info)
    await R.arun("user_stream", SPOT, user_stream)
    await R.arun("order_entry", SPOT, order_entry)
    R.run("err_signature", SPOT, expect_error, client(secret=C.WRONG_SECRET), BadRequestError, -1022)
    R.run("err_unknown_key", SPOT, expect_error, client(key=C.UNKNOWN_KEY), UnauthorizedError, -2015)
    R.run("err_bad_key", SPOT, expect_error, client(key=C.MALFORMED_KEY), UnauthorizedError, -2014)
    await R.arun("err_ws_api", SPOT, ws_api_errors)
    why = "binance-sdk-spot covers Spot only (USD-M is binance-sdk-derivatives-trading-usds-futures)"
    for op, _ in C.OPS:
        R.na(op, USDM, why)


if __name__ == "__main__":
    asyncio.run(main())
