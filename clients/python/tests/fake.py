"""An in-memory stand-in for the few Redis commands the mirror uses, plus a daemon emulation
that writes the contract's keys (§4). Replies are bytes, as redis-py's default gives them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from samples import BALANCE, ORDER


def _id(text: str | bytes) -> tuple[int, int]:
    s = text.decode() if isinstance(text, bytes) else text
    if s in ("-", "+"):
        return (0, 0) if s == "-" else (2**64, 2**64)
    a, _, b = s.partition("-")
    return int(a), int(b or 0)


class FakeRedis:
    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.strings: dict[str, bytes] = {}
        self.streams: dict[str, list[tuple[tuple[int, int], dict[bytes, bytes]]]] = {}
        self.fail = 0  # the next N commands raise ConnectionError
        self.calls: list[str] = []
        self._changed = asyncio.Event()

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.fail > 0:
            self.fail -= 1
            raise RedisConnectionError("fake: connection lost")

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # the commands ------------------------------------------------------------------------
    def _hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    def _get(self, key: str) -> bytes | None:
        return self.strings.get(key)

    def _xrange(self, key: str, lo: str, hi: str, count: int | None = None) -> list[Any]:
        a, b = _id(lo), _id(hi)
        out = [(f"{i[0]}-{i[1]}".encode(), f) for i, f in self.streams.get(key, []) if a <= i <= b]
        return out[:count] if count else out

    def _xrevrange(self, key: str, hi: str, lo: str, count: int | None = None) -> list[Any]:
        out = list(reversed(self._xrange(key, lo, hi)))
        return out[:count] if count else out

    async def xrange(self, key: str, lo: str, hi: str, count: int | None = None) -> list[Any]:
        self._check("xrange")
        return self._xrange(key, lo, hi, count)

    async def xread(self, streams: dict[str, str], count: int | None = None,
                    block: int | None = None) -> list[Any]:
        self._check("xread")
        ((key, after),) = streams.items()
        for attempt in range(2):
            got = [(f"{i[0]}-{i[1]}".encode(), f) for i, f in self.streams.get(key, [])
                   if i > _id(after)][: count or None]
            if got or attempt or not block:
                return [[key.encode(), got]] if got else []
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=block / 1000)
            except asyncio.TimeoutError:
                pass
        return []

    def pipeline(self, transaction: bool = True) -> "FakePipeline":
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, r: FakeRedis) -> None:
        self.r = r
        self.ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> "FakePipeline":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kw: Any) -> "FakePipeline":
            self.ops.append((name, args, kw))
            return self
        return queue

    async def execute(self) -> list[Any]:
        self.r._check("multi")
        return [getattr(self.r, "_" + n)(*a, **kw) for n, a, kw in self.ops]


class FakeDaemon:
    """Writes what the daemon writes: hashes + P:seq + P:changes in one step."""

    def __init__(self, r: FakeRedis, base: str = "acctstate:main", maxlen: int = 100_000) -> None:
        self.r, self.base, self.maxlen = r, base, maxlen
        self.seq = 1000
        self.balances: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}

    def _msg(self, seq: int, kind: str, data: dict[str, Any]) -> bytes:
        return json.dumps({"v": 1, "account_id": "main", "seq": seq, "kind": kind,
                           "source": "stream", "event_time": 1, "data": data}).encode()

    def _append(self, eid: tuple[int, int], msg: bytes) -> None:
        if self.maxlen:
            s = self.r.streams.setdefault(f"{self.base}:changes", [])
            s.append((eid, {b"m": msg}))
            del s[: max(0, len(s) - self.maxlen)]

    def balance(self, asset: str, free: str, raw: bytes | None = None) -> int:
        self.seq += 1
        data = {**BALANCE, "asset": asset, "free": free}
        self.balances[asset] = data
        h = self.r.hashes.setdefault(f"{self.base}:balances", {})
        h[asset.encode()] = json.dumps(data).encode()
        self._append((self.seq, 0), raw if raw is not None else self._msg(self.seq, "balance", data))
        self.r.strings[f"{self.base}:seq"] = str(self.seq).encode()
        self.r.notify()
        return self.seq

    def order(self, oid: int, status: str) -> int:
        self.seq += 1
        data = {**ORDER, "order_id": oid, "status": status}
        h = self.r.hashes.setdefault(f"{self.base}:open_orders", {})
        key = f"ETHUSDT:{oid}"
        if status in ("FILLED", "CANCELED"):
            h.pop(key.encode(), None)
            self.orders.pop(key, None)
        else:
            h[key.encode()] = json.dumps(data).encode()
            self.orders[key] = data
        self._append((self.seq, 0), self._msg(self.seq, "order", data))
        self.r.strings[f"{self.base}:seq"] = str(self.seq).encode()
        self.r.notify()
        return self.seq

    def silent_balance(self, asset: str, free: str) -> None:
        """A change Redis never got (it was down): only the daemon's cache has it."""
        self.seq += 1
        self.balances[asset] = {**BALANCE, "asset": asset, "free": free}

    def lose_everything(self) -> None:
        """Redis restarted empty."""
        self.r.hashes.clear()
        self.r.strings.clear()
        self.r.streams.clear()

    def resync(self) -> None:
        """Rewrites the keys from the cache and appends the resync marker as {seq}-N."""
        r, b = self.r, self.base
        r.hashes[f"{b}:balances"] = {k.encode(): json.dumps(v).encode() for k, v in self.balances.items()}
        r.hashes[f"{b}:open_orders"] = {k.encode(): json.dumps(v).encode() for k, v in self.orders.items()}
        r.strings[f"{b}:seq"] = str(self.seq).encode()
        s = r.streams.get(f"{b}:changes", [])
        n = s[-1][0][1] + 1 if s and s[-1][0][0] == self.seq else 0
        self._append((self.seq, n), self._msg(self.seq, "status", {"event": "resync"}))
        r.notify()
