"""Sample messages of the contract (§4) shared by the unit tests."""

from __future__ import annotations

import json

BIG = 2**53 + 1  # not representable as a float


def message(kind: str, data: dict, seq: int = 42, **over: object) -> str:
    m = {"v": 1, "account_id": "main", "seq": seq, "kind": kind, "source": "stream",
         "event_time": 1700000000000, "data": data}
    m.update(over)
    return json.dumps(m)


BALANCE = {"asset": "BTC", "free": "1.50000000", "locked": "0", "total": "1.50000000",
           "updated_at": 1700000000000}
POSITION = {"symbol": "BTCUSDT", "position_side": "BOTH", "amount": "-0.010",
            "entry_price": "65000.10", "breakeven_price": "65010.2", "unrealized_pnl": "-1.23",
            "realized_pnl": "4.56", "margin_type": "cross", "isolated_wallet": "0",
            "updated_at": 1700000000001}
ORDER = {"symbol": "ETHUSDT", "order_id": BIG, "client_order_id": "abc", "side": "SELL",
         "order_type": "LIMIT", "time_in_force": "GTC", "status": "NEW",
         "price": "3069.18000000", "stop_price": "0.00000000", "orig_qty": "0.86410000",
         "executed_qty": "0.00000000", "cum_quote_qty": "0.00000000",
         "created_at": 1700000000000, "updated_at": 1700000000002}
FILL = {"symbol": "ETHUSDT", "trade_id": BIG + 2, "order_id": BIG, "side": "SELL",
        "price": "3069.18", "qty": "0.1", "quote_qty": "306.918", "commission": "0.00010000",
        "commission_asset": "BNB", "is_maker": True, "traded_at": 1700000000003}
