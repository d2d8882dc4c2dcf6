"""The pure apply rules of AccountState (no Redis needed)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from acctstate_client import AccountState, MalformedMessage, Order, parse_change, parse_snapshot

from samples import BALANCE, BIG, FILL, ORDER, POSITION, message


def change(kind: str, data: dict, seq: int):  # type: ignore[no-untyped-def]
    return parse_change(message(kind, data, seq=seq))


def test_apply_sets_and_moves_seq() -> None:
    s = AccountState()
    assert s.apply(change("balance", BALANCE, 10))
    assert s.apply(change("position", POSITION, 11))
    assert s.apply(change("order", ORDER, 12))
    assert s.apply(change("fill", FILL, 13))
    assert s.apply(change("status", {"event": "connected"}, 14))
    assert s.seq == 14
    assert s.balances["BTC"].total == Decimal("1.50000000")
    assert set(s.positions) == {"BTCUSDT:BOTH"}
    assert set(s.open_orders) == {f"ETHUSDT:{BIG}"}
    assert [f.trade_id for f in s.fills] == [BIG + 2]


def test_never_twice_never_backwards() -> None:
    s = AccountState()
    assert s.apply(change("balance", BALANCE, 10))
    newer = {**BALANCE, "free": "9"}
    assert not s.apply(change("balance", newer, 10))  # same seq: refused
    assert not s.apply(change("balance", newer, 9))  # older: refused
    assert s.balances["BTC"].free == Decimal("1.50000000") and s.seq == 10
    assert not s.apply(change("fill", FILL, 5)) and len(s.fills) == 0


def test_final_orders_leave_the_open_set() -> None:
    s = AccountState()
    s.apply(change("order", ORDER, 1))
    s.apply(change("order", {**ORDER, "status": "PARTIALLY_FILLED", "executed_qty": "0.1"}, 2))
    assert s.open_orders[f"ETHUSDT:{BIG}"].executed_qty == Decimal("0.1")
    for i, final in enumerate(["FILLED", "CANCELED", "EXPIRED_IN_MATCH", "FINISHED"]):
        oid = 100 + i
        s.apply(change("order", {**ORDER, "order_id": oid}, 10 + 2 * i))
        assert f"ETHUSDT:{oid}" in s.open_orders
        s.apply(change("order", {**ORDER, "order_id": oid, "status": final}, 11 + 2 * i))
        assert f"ETHUSDT:{oid}" not in s.open_orders
    # A final status of an order never seen open removes nothing and is fine.
    assert s.apply(change("order", {**ORDER, "order_id": 999, "status": "CANCELED"}, 50))
    assert set(s.open_orders) == {f"ETHUSDT:{BIG}"}


def test_fills_are_bounded() -> None:
    s = AccountState(fills_maxlen=3)
    for i in range(5):
        s.apply(change("fill", {**FILL, "trade_id": i}, i + 1))
    assert [f.trade_id for f in s.fills] == [2, 3, 4]


def hashes(seq: int | None, orders: list[dict] | None = None) -> tuple:  # type: ignore[type-arg]
    enc = lambda d: json.dumps(d).encode()  # noqa: E731
    return (
        {b"BTC": enc(BALANCE)},
        {b"BTCUSDT:BOTH": enc(POSITION)},
        {f"{o['symbol']}:{o['order_id']}".encode(): enc(o) for o in (orders or [ORDER])},
        None if seq is None else str(seq).encode(),
    )


def test_snapshot_replaces_and_refuses_older() -> None:
    s = AccountState()
    s.apply(change("balance", {**BALANCE, "asset": "ETH"}, 5))
    snap = parse_snapshot(*hashes(7))
    assert s.replace(snap) and s.seq == 7 and set(s.balances) == {"BTC"}
    assert s.same_state(snap)
    assert not s.replace(parse_snapshot(*hashes(6)))  # older than held: refused
    assert not s.replace(parse_snapshot(*hashes(None)))  # Redis empty: refused
    assert s.seq == 7
    assert s.replace(parse_snapshot(*hashes(7)))  # same seq (a resync): taken


def test_snapshot_strings_or_bytes_and_errors() -> None:
    b, p, o, _ = hashes(1)
    snap = parse_snapshot({k.decode(): v.decode() for k, v in b.items()}, p, o, "12")
    assert snap.seq == 12 and isinstance(snap.open_orders[f"ETHUSDT:{BIG}"], Order)
    with pytest.raises(MalformedMessage, match="P:seq holds 'x'"):
        parse_snapshot(b, p, o, b"x")
    with pytest.raises(MalformedMessage, match="holds the entity keyed 'BTC'"):
        parse_snapshot({b"ETH": b[b"BTC"]}, p, o, b"1")
    with pytest.raises(MalformedMessage, match="P:balances field 'BTC'"):
        parse_snapshot({b"BTC": b"{}"}, p, o, b"1")
    with pytest.raises(MalformedMessage, match="finished orders"):
        parse_snapshot(*hashes(1, [{**ORDER, "status": "FILLED"}]))
