"""Parsing of the contract's messages and hash values (no Redis needed)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from acctstate_client import (
    Balance,
    Fill,
    MalformedMessage,
    Order,
    Position,
    Status,
    parse_change,
    parse_entity,
)
from acctstate_client.mirror import parse_stream_id

from samples import BALANCE, BIG, FILL, ORDER, POSITION, message


def test_balance_is_exact_decimal() -> None:
    c = parse_change(message("balance", BALANCE))
    assert isinstance(c.entity, Balance)
    assert c.entity.free == Decimal("1.50000000")
    assert str(c.entity.free) == "1.50000000"  # scale kept, no float in between
    assert c.entity.wallet_balance is None and c.entity.key == "BTC"
    assert (c.seq, c.kind, c.source, c.event_time, c.account_id) == (
        42, "balance", "stream", 1700000000000, "main")


def test_usdm_balance_fields() -> None:
    b = parse_entity("balance", {**BALANCE, "wallet_balance": "10.1", "cross_wallet_balance": "9.9"})
    assert isinstance(b, Balance)
    assert b.wallet_balance == Decimal("10.1") and b.cross_wallet_balance == Decimal("9.9")


def test_decimal_exactness_beyond_float() -> None:
    v = "12345678901234567890.123456789012345678"
    b = parse_entity("balance", {**BALANCE, "total": v})
    assert isinstance(b, Balance) and str(b.total) == v
    assert Decimal("0.1") + Decimal("0.2") == parse_entity("balance", {**BALANCE, "free": "0.3"}).free  # type: ignore[union-attr]


def test_ids_above_2_53_are_exact() -> None:
    c = parse_change(message("order", ORDER, seq=BIG + 7))
    assert c.seq == BIG + 7
    assert isinstance(c.entity, Order) and c.entity.order_id == BIG
    assert c.entity.key == f"ETHUSDT:{BIG}"
    f = parse_entity("fill", FILL)
    assert isinstance(f, Fill) and f.trade_id == BIG + 2 and f.is_maker is True
    assert parse_stream_id(f"{BIG}-3".encode()) == (BIG, 3)


def test_position_and_key() -> None:
    p = parse_entity("position", POSITION)
    assert isinstance(p, Position)
    assert p.key == "BTCUSDT:BOTH" and p.amount == Decimal("-0.010")


def test_fill_optional_fields() -> None:
    f = parse_entity("fill", {**FILL, "commission_asset": None, "realized_pnl": "1.5"})
    assert isinstance(f, Fill) and f.commission_asset is None and f.realized_pnl == Decimal("1.5")
    f = parse_entity("fill", {k: v for k, v in FILL.items() if k != "commission_asset"})
    assert isinstance(f, Fill) and f.commission_asset is None and f.realized_pnl is None


def test_status_and_resync() -> None:
    c = parse_change(message("status", {"event": "resync"}))
    assert c.is_resync and c.status == Status("resync", None)
    c = parse_change(message("status", {"event": "disconnected", "detail": "eof"}))
    assert not c.is_resync and c.status == Status("disconnected", "eof")


def test_unknown_fields_are_ignored() -> None:
    c = parse_change(message("balance", {**BALANCE, "new_field": [1, 2]}, extra="x"))
    assert isinstance(c.entity, Balance)


def test_final_statuses() -> None:
    for s in ["FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH", "TRIGGERED",
              "FINISHED"]:
        o = parse_entity("order", {**ORDER, "status": s})
        assert isinstance(o, Order) and o.is_final
    for s in ["NEW", "PENDING_NEW", "PARTIALLY_FILLED", "PENDING_CANCEL", "TRIGGERING"]:
        o = parse_entity("order", {**ORDER, "status": s})
        assert isinstance(o, Order) and not o.is_final


@pytest.mark.parametrize(
    "text, words",
    [
        ("not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        (message("balance", {**BALANCE, "free": 1.5}), "'free' must be a decimal string"),
        (message("balance", {**BALANCE, "free": "abc"}), "'free' is not a decimal"),
        (message("balance", {**BALANCE, "free": "NaN"}), "not a finite decimal"),
        (message("balance", {k: v for k, v in BALANCE.items() if k != "asset"}), "missing field 'asset'"),
        (message("order", {**ORDER, "order_id": 1.0}), "'order_id' must be a JSON integer"),
        (message("order", {**ORDER, "order_id": "17"}), "'order_id' must be a JSON integer"),
        (message("fill", {**FILL, "is_maker": 1}), "'is_maker' must be a boolean"),
        (message("order", ORDER, seq=True), "'seq' must be a JSON integer"),
        (message("weird", {}), "unknown kind 'weird'"),
        (message("balance", BALANCE, v=2), "unsupported protocol version"),
        (message("balance", "x"), "message.data: expected a JSON object"),  # type: ignore[arg-type]
    ],
)
def test_malformed_is_a_clear_error(text: str, words: str) -> None:
    with pytest.raises(MalformedMessage, match=words.replace("(", r"\(")):
        parse_change(text)


def test_bytes_input() -> None:
    c = parse_change(message("fill", FILL).encode())
    assert isinstance(c.entity, Fill)


def test_dataclasses_are_frozen() -> None:
    b = parse_entity("balance", BALANCE)
    with pytest.raises(AttributeError):
        b.free = Decimal(0)  # type: ignore[misc, union-attr]
