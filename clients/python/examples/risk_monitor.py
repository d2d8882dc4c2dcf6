"""Risk monitor: positions and PnL per symbol, a small table on every position change.

    python examples/risk_monitor.py --account main [--prefix acctstate] [--url redis://127.0.0.1:6379]

Try it against the simulated USD-M exchange: `acctstate demo --market usdm` in another terminal.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

import redis.asyncio as aioredis

from acctstate_client import AccountMirror, Change, Position

ZERO = Decimal(0)


@dataclass
class SymbolRisk:
    symbol: str
    amount: Decimal = ZERO  # net over position sides (LONG/SHORT/BOTH)
    notional: Decimal = ZERO  # |amount| × entry price, summed over sides
    unrealized: Decimal = ZERO
    realized: Decimal = ZERO

    @property
    def pnl(self) -> Decimal:
        return self.unrealized + self.realized


def by_symbol(positions: Iterable[Position]) -> list[SymbolRisk]:
    out: dict[str, SymbolRisk] = defaultdict(lambda: SymbolRisk(""))
    for p in positions:
        r = out[p.symbol]
        r.symbol = p.symbol
        r.amount += p.amount
        r.notional += abs(p.amount) * p.entry_price
        r.unrealized += p.unrealized_pnl
        r.realized += p.realized_pnl
    return sorted(out.values(), key=lambda r: r.symbol)


def table(rows: list[SymbolRisk], seq: int) -> str:
    head = f"{'symbol':<12}{'amount':>16}{'notional':>18}{'unrealized':>16}{'realized':>16}{'pnl':>16}"
    lines = [f"-- seq {seq}", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.symbol:<12}{r.amount:>16}{r.notional:>18.2f}{r.unrealized:>16.4f}"
                     f"{r.realized:>16.4f}{r.pnl:>16.4f}")
    total = sum((r.pnl for r in rows), ZERO)
    lines.append(f"{'total':<12}{'':>16}{'':>18}{'':>16}{'':>16}{total:>16.4f}")
    return "\n".join(lines)


async def main(url: str, account: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    mirror = AccountMirror(client, account, prefix)

    def show(_: object = None) -> None:
        print(table(by_symbol(mirror.positions.values()), mirror.seq), flush=True)

    def on_change(change: Change) -> None:
        if change.kind == "position":
            show()

    mirror.on_change = on_change
    mirror.on_resync = show  # the whole state was re-read: positions may all have changed
    await mirror.start()
    show()
    try:
        await mirror.run()
    finally:
        await client.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--account", default="main")
    ap.add_argument("--prefix", default="acctstate")
    ap.add_argument("--url", default="redis://127.0.0.1:6379")
    a = ap.parse_args()
    try:
        asyncio.run(main(a.url, a.account, a.prefix))
    except KeyboardInterrupt:
        pass
