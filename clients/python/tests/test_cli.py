"""The `watch` CLI's lines and the risk monitor's table (no Redis needed)."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from acctstate_client import Position, parse_change
from acctstate_client.__main__ import describe, main

from samples import BALANCE, BIG, FILL, ORDER, POSITION, message


def test_describe_every_kind() -> None:
    assert "BTC free=1.50000000" in describe(parse_change(message("balance", BALANCE)))
    assert "BTCUSDT:BOTH amount=-0.010" in describe(parse_change(message("position", POSITION)))
    assert f"ETHUSDT:{BIG} NEW SELL LIMIT" in describe(parse_change(message("order", ORDER)))
    assert f"trade={BIG + 2}" in describe(parse_change(message("fill", FILL)))
    line = describe(parse_change(message("status", {"event": "disconnected", "detail": "eof"})))
    assert line.endswith("disconnected (eof)")


def test_watch_needs_an_account() -> None:
    with pytest.raises(SystemExit) as e:
        main(["watch"])
    assert e.value.code == 2


def test_risk_table_sums_pnl_per_symbol() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "risk_monitor.py"
    spec = importlib.util.spec_from_file_location("risk_monitor", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["risk_monitor"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)

    def pos(side: str, amount: str, entry: str, upnl: str, rpnl: str) -> Position:
        return Position("BTCUSDT", side, Decimal(amount), Decimal(entry), Decimal(0),
                        Decimal(upnl), Decimal(rpnl), "cross", Decimal(0), 1)

    rows = mod.by_symbol([pos("LONG", "0.5", "60000", "10.5", "1"),
                          pos("SHORT", "-0.2", "61000", "-2", "0.25")])
    assert len(rows) == 1 and rows[0].amount == Decimal("0.3")
    assert rows[0].pnl == Decimal("9.75")
    assert "9.7500" in mod.table(rows, 7)
