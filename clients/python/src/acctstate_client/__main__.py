"""``python -m acctstate_client watch --account ID``: one line per change, for people."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Sequence, TextIO

import redis.asyncio as aioredis

from .mirror import AccountMirror
from .types import Balance, Change, Fill, Order, Position, Status


def describe(change: Change) -> str:
    """A short human line for a change."""
    e = change.entity
    head = f"{change.seq:>20} {change.kind:<8} {change.source:<8}"
    if isinstance(e, Balance):
        body = f"{e.asset} free={e.free} locked={e.locked} total={e.total}"
        if e.wallet_balance is not None:
            body += f" wallet={e.wallet_balance}"
    elif isinstance(e, Position):
        body = (f"{e.key} amount={e.amount} entry={e.entry_price} "
                f"upnl={e.unrealized_pnl} rpnl={e.realized_pnl}")
    elif isinstance(e, Order):
        body = (f"{e.key} {e.status} {e.side} {e.order_type} {e.orig_qty}@{e.price} "
                f"filled={e.executed_qty}")
    elif isinstance(e, Fill):
        fee = f" fee={e.commission} {e.commission_asset or ''}".rstrip()
        body = f"{e.symbol} trade={e.trade_id} order={e.order_id} {e.side} {e.qty}@{e.price}{fee}"
    elif isinstance(e, Status):
        body = e.event + (f" ({e.detail})" if e.detail else "")
    else:  # pragma: no cover - every kind is handled above
        body = repr(e)
    return f"{head} {body}"


async def _close(client: aioredis.Redis) -> None:
    close = getattr(client, "aclose", None) or client.close  # aclose: redis-py >= 5.0.1
    await close()


async def watch(url: str, account: str, prefix: str, out: TextIO = sys.stdout) -> int:
    client = aioredis.Redis.from_url(url)
    mirror = AccountMirror(client, account, prefix)

    def reloaded(reason: str) -> None:
        print(f"-- state re-read ({reason}): seq={mirror.seq} balances={len(mirror.balances)} "
              f"positions={len(mirror.positions)} open_orders={len(mirror.open_orders)}",
              file=out, flush=True)

    mirror.on_resync = reloaded
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, mirror.stop)
        except (NotImplementedError, RuntimeError):  # not on this platform
            pass
    try:
        await mirror.start()
    except Exception as e:
        print(f"error: cannot read {prefix}:{account} from {url}: {e}", file=sys.stderr)
        await _close(client)
        return 1
    reloaded("start")
    runner = asyncio.create_task(mirror.run())
    try:
        async for change in mirror.changes():
            print(describe(change), file=out, flush=True)
        await runner
    finally:
        mirror.stop()
        await asyncio.gather(runner, return_exceptions=True)
        await _close(client)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m acctstate_client",
                                description="Follow an acctstate account in Redis.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="print one line per change until Ctrl-C")
    w.add_argument("--account", required=True, help="the account_id (e.g. main)")
    w.add_argument("--prefix", default="acctstate", help="redis.prefix (default acctstate)")
    w.add_argument("--url", default="redis://127.0.0.1:6379", help="Redis URL")
    args = p.parse_args(argv)
    try:
        return asyncio.run(watch(args.url, args.account, args.prefix))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
