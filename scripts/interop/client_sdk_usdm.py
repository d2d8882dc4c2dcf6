"""binance-sdk-derivatives-trading-usds-futures (Binance's official USD-M SDK) against the USD-M sim.

Configured as its README documents: ConfigurationRestAPI(base_path=...) for REST and
ConfigurationWebSocketStreams(stream_url=...) for the streams; the user-data stream is
`start_user_data_stream()` (POST /fapi/v1/listenKey) + `websocket_streams.user_data(listenKey)`,
which SUBSCRIBEs the bare key on <stream_url>/private/stream. Nothing of the SDK is patched.
"""

import asyncio
import logging
import time
from decimal import Decimal

from binance_common.configuration import ConfigurationRestAPI, ConfigurationWebSocketStreams
from binance_common.errors import BadRequestError, UnauthorizedError
from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
    DerivativesTradingUsdsFutures,
)
from binance_sdk_derivatives_trading_usds_futures.rest_api.models import (
    NewOrderSideEnum,
    NewOrderTimeInForceEnum,
    NewOrderTypeEnum,
)

import common as C
from common import SPOT, USDM, check, eq

CLIENT = "binance-sdk-usds-futures"
R = C.Results(CLIENT)
SIM = C.SIM


class LogCatcher(logging.Handler):
    """Model fallbacks (the SDK logs and returns the raw payload) and WebSocket connect errors
    (the SDK logs them and returns None from create_connection)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.fallbacks, self.ws_errors = [], []

    def emit(self, record):
        msg = record.getMessage()
        if "did not match" in msg or "Failed to parse" in msg:
            self.fallbacks.append(msg)
        if "WebSocket" in msg and ("fail" in msg.lower() or "error" in msg.lower()):
            self.ws_errors.append(msg)


LOG = LogCatcher()
logging.getLogger().addHandler(LOG)


def no_fallback(what):
    if LOG.fallbacks:
        msgs = list(LOG.fallbacks)
        LOG.fallbacks.clear()
        raise AssertionError(f"{what}: the SDK could not parse the sim's payload into its model: {msgs[0]}")


def client(key=None, secret=None):
    return DerivativesTradingUsdsFutures(
        config_rest_api=ConfigurationRestAPI(
            api_key=key or SIM.key, api_secret=secret or SIM.secret,
            base_path=SIM.rest[USDM], timeout=5000, retries=0),
        config_ws_streams=ConfigurationWebSocketStreams(stream_url=SIM.usdm_ws, reconnect_attempts=1),
    )


CL = client()


def unwrap(x):
    return getattr(x, "actual_instance", None) or x


def account():
    def mine():
        d = CL.rest_api.account_information_v3().data()
        no_fallback("account_information_v3")
        check(type(d).__name__ == "AccountInformationV3Response", f"returned {type(d).__name__}")
        return C.usdm_assets([a.to_dict() for a in d.assets])

    assets = C.consistent(lambda: C.raw_account_projection(USDM), mine, "assets")
    check("USDT" in assets, f"no USDT asset in {assets}")
    # Positions: same symbols and amounts as the sim's REST.
    pos = C.consistent(
        lambda: {p["symbol"]: p["positionAmt"] for p in C.raw_account(USDM)["positions"]},
        lambda: {p.symbol: p.position_amt for p in CL.rest_api.account_information_v3().data().positions},
        "positions")
    return f"{len(assets)} assets (USDT wallet {assets['USDT'][0]}), {len(pos)} positions agree"


def open_orders():
    def mine():
        d = CL.rest_api.current_all_open_orders().data()
        no_fallback("current_all_open_orders")
        return C.order_projection([o.to_dict() for o in d])

    got = C.consistent(lambda: C.order_projection(C.raw_open_orders(USDM)), mine, "open orders", nonempty=True)
    check(got, "the sim has open orders, the client listed none")
    return f"{len(got)} open orders agree"


def trades():
    raw = {t["id"]: t for t in C.raw_trades(USDM, "BTCUSDT")}
    d = CL.rest_api.account_trade_list(symbol="BTCUSDT", limit=1000).data()
    no_fallback("account_trade_list")
    check(d, "account_trade_list(BTCUSDT) returned no trade; the sim has some")
    shared = 0
    for t in d:
        r = raw.get(t.id)
        if r is None:
            continue
        shared += 1
        for attr, key in (("price", "price"), ("qty", "qty"), ("quote_qty", "quoteQty"),
                          ("commission", "commission"), ("commission_asset", "commissionAsset"),
                          ("realized_pnl", "realizedPnl"), ("side", "side"), ("order_id", "orderId"),
                          ("buyer", "buyer"), ("maker", "maker"), ("time", "time")):
            eq(getattr(t, attr), r[key], f"trade {t.id} {key}")
    check(shared >= len(d) - 5, f"client trades {len(d)}, shared with REST {shared}")
    return f"{len(d)} trades, values equal to the sim's"


def exchange_info():
    CL.rest_api.test_connectivity()
    st = CL.rest_api.check_server_time().data()
    check(abs(st.server_time - time.time() * 1000) < 60_000, f"serverTime {st.server_time}")
    raw = C.raw(USDM, C.INFO_PATH[USDM])
    resp = CL.rest_api.exchange_information()
    d = resp.data()
    used = [r for r in resp.rate_limits if r.rateLimitType == "REQUEST_WEIGHT" and r.interval == "MINUTE"]
    check(used and used[0].count > 0,
          f"the SDK's rate_limits (from X-MBX-USED-WEIGHT-1M) show no used weight: {resp.rate_limits}")
    no_fallback("exchange_information")
    names = [s.symbol for s in d.symbols]
    eq(names, [s["symbol"] for s in raw["symbols"]], "symbols")
    for s, rs in zip(d.symbols, raw["symbols"]):
        eq(s.price_precision, rs["pricePrecision"], f"{s.symbol} pricePrecision")
        eq(s.quantity_precision, rs["quantityPrecision"], f"{s.symbol} quantityPrecision")
        rf = {f["filterType"]: f for f in rs["filters"]}
        filters = {}
        for f in s.filters:
            fd = unwrap(f).to_dict() if hasattr(unwrap(f), "to_dict") else dict(f)
            filters[fd.get("filterType")] = fd
        for ft, key in (("PRICE_FILTER", "tickSize"), ("LOT_SIZE", "stepSize"), ("LOT_SIZE", "minQty"),
                        ("MIN_NOTIONAL", "notional")):
            check(ft in filters, f"{s.symbol}: {ft} missing from the SDK's filters {list(filters)}")
            eq(filters[ft].get(key), rf[ft][key], f"{s.symbol} {ft}.{key}")
    return f"ping, time, used weight {used[0].count}, {len(names)} symbols with filters equal to the sim's"


# ---------------------------------------------------------------------------- streams


class Stream:
    """listenKey + the SDK's user_data() stream, collecting parsed events."""

    def __init__(self):
        self.events = []
        self.conn = None

    async def __aenter__(self):
        lk = CL.rest_api.start_user_data_stream().data().listen_key
        check(isinstance(lk, str) and len(lk) > 20, f"listenKey {lk!r}")
        LOG.ws_errors.clear()
        self.conn = await CL.websocket_streams.create_connection()
        if self.conn is None:
            from binance_sdk_derivatives_trading_usds_futures.websocket_streams.websocket_streams import (
                DerivativesTradingUsdsFuturesWebSocketStreams as Streams,
            )

            raise AssertionError(
                "websocket_streams.create_connection() failed (the SDK logged: "
                + "; ".join(LOG.ws_errors or ["nothing"]) + "); it opens one connection per url_path "
                "['market', 'public', 'private'] (" + C.source_of(Streams.__init__) + "), i.e. "
                "<stream_url>/market/stream, /public/stream and /private/stream, and gives up "
                "when any handshake fails")
        handle = await self.conn.user_data(lk)
        handle.on("message", lambda m: self.events.append(unwrap(m)))
        # The SDK does not wait for the SUBSCRIBE to take effect: the first event proves it has.
        await C.wait_for(lambda: self.events, C.EVENT_DEADLINE_S, "the first event after SUBSCRIBE")
        return self

    async def __aexit__(self, *exc):
        try:
            if self.conn is not None:
                await self.conn.close_connection(close_session=True)
        except Exception:  # noqa: BLE001
            pass

    def find(self, pred):
        return next((e for e in self.events if pred(e)), None)


def is_otu(e):
    return type(e).__name__ == "OrderTradeUpdate"


async def user_stream():
    async with Stream() as s:
        await C.wait_for(lambda: s.events, C.EVENT_DEADLINE_S, "a user-data event")
        ev = await C.wait_for(lambda: s.find(is_otu), C.EVENT_DEADLINE_S, "an ORDER_TRADE_UPDATE")
        kinds = sorted({type(e).__name__ for e in s.events})
    o = C.raw_signed(USDM, "GET", "/fapi/v1/order", {"symbol": ev.o.s, "orderId": ev.o.i})
    eq(ev.o.c, o["clientOrderId"], f"order {ev.o.i} clientOrderId")
    return f"{len(s.events)} events parsed ({', '.join(kinds)}); ORDER_TRADE_UPDATE #{ev.o.i} matches REST"


async def order_entry():
    plan = C.plan_order(USDM)
    coid = C.client_order_id("sdk")
    async with Stream() as s:
        placed = CL.rest_api.new_order(
            symbol=plan.symbol, side=NewOrderSideEnum.BUY, type=NewOrderTypeEnum.LIMIT,
            time_in_force=NewOrderTimeInForceEnum.GTC, quantity=plan.qty, price=plan.price,
            new_client_order_id=coid).data()
        no_fallback("new_order")
        eq(placed.client_order_id, coid, "new_order clientOrderId")
        eq(placed.status, "NEW", "new_order status")
        eq(Decimal(placed.price), plan.price, "new_order price")
        eq(Decimal(placed.orig_qty), plan.qty, "new_order origQty")
        oid = placed.order_id
        await C.wait_for(lambda: s.find(lambda e: is_otu(e) and e.o.i == oid and e.o.x == "NEW"),
                         C.EVENT_DEADLINE_S, f"ORDER_TRADE_UPDATE NEW of order {oid}")
        C.assert_rest_order_state(USDM, plan.symbol, coid, "NEW", True)
        eq(CL.rest_api.query_order(symbol=plan.symbol, order_id=oid).data().status, "NEW",
           "client query_order status")
        cancelled = CL.rest_api.cancel_order(symbol=plan.symbol, order_id=oid).data()
        no_fallback("cancel_order")
        eq(cancelled.status, "CANCELED", "cancel_order status")
        cev = await C.wait_for(
            lambda: s.find(lambda e: is_otu(e) and e.o.i == oid and e.o.x == "CANCELED"),
            C.EVENT_DEADLINE_S, f"ORDER_TRADE_UPDATE CANCELED of order {oid}")
        eq(cev.o.c, coid, "CANCELED event clientOrderId")
        C.assert_rest_order_state(USDM, plan.symbol, coid, "CANCELED", False)
        eq(CL.rest_api.query_order(symbol=plan.symbol, order_id=oid).data().status, "CANCELED",
           "client query_order status after cancel")
    return f"{plan}: NEW and CANCELED on the stream, REST agrees"


def expect_error(cl, exc_type, code):
    try:
        cl.rest_api.account_information_v3()
    except exc_type as e:
        eq(e.status_code, code, f"{exc_type.__name__}.status_code (Binance code)")
        return f"{exc_type.__name__}(status_code={e.status_code}, {e.error_message!r})"
    raise AssertionError(f"account_information_v3 succeeded; expected {exc_type.__name__} {code}")


async def main():
    why = "the USD-M SDK covers USD-M only (Spot is binance-sdk-spot)"
    for op, _ in C.OPS:
        R.na(op, SPOT, why)
    R.run("account", USDM, account)
    R.run("open_orders", USDM, open_orders)
    R.run("trades", USDM, trades)
    R.run("exchange_info", USDM, exchange_info)
    await R.arun("user_stream", USDM, user_stream)
    await R.arun("order_entry", USDM, order_entry)
    R.run("err_signature", USDM, expect_error, client(secret=C.WRONG_SECRET), BadRequestError, -1022)
    R.run("err_unknown_key", USDM, expect_error, client(key=C.UNKNOWN_KEY), UnauthorizedError, -2015)
    R.run("err_bad_key", USDM, expect_error, client(key=C.MALFORMED_KEY), UnauthorizedError, -2014)
    R.na("err_ws_api", USDM, C.WS_API_NA)


if __name__ == "__main__":
    asyncio.run(main())
