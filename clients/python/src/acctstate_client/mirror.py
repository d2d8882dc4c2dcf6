"""AccountMirror: a live copy of one account, read from the daemon's Redis keys (contract §4).

Protocol v2 (stream resume): one atomic read of the hashes + ``P:seq``, then
``XREAD BLOCK … STREAMS P:changes <last id>`` in a loop, applying each entry whose seq is above
the one held. After a disconnect of its own it resumes from the stream (no hash read) while the
stream still holds the entry after the last one applied; otherwise — entries trimmed past it,
the stream gone while ``P:seq`` moved on, or a ``resync`` status — it reads the hashes again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections import deque
from typing import Any, Awaitable, Callable, Optional, Union

import redis.asyncio as aioredis
from redis import exceptions as rexc

from .delivery import STOP as _STOP, ChangeIterator, MirrorStats
from .state import AccountState, Snapshot, decode_text, parse_seq, parse_snapshot
from .types import Balance, Change, Fill, MalformedMessage, Order, Position, parse_change

__all__ = ["AccountMirror", "ChangeIterator", "MirrorStats", "StreamId", "parse_stream_id"]

log = logging.getLogger("acctstate_client")

StreamId = tuple[int, int]
ChangeCallback = Callable[[Change], Union[None, Awaitable[None]]]
FillCallback = Callable[[Fill], Union[None, Awaitable[None]]]
#: Called with the reason ("resync", "fallback" or "malformed") after the state was re-read.
ResyncCallback = Callable[[str], Union[None, Awaitable[None]]]

#: Errors after which the mirror backs off, reconnects and resumes.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


def parse_stream_id(raw: str | bytes) -> StreamId:
    """``"42-0"`` → ``(42, 0)``."""
    text = decode_text(raw)
    ms, sep, sub = text.partition("-")
    try:
        return int(ms), int(sub) if sep else 0
    except ValueError:
        raise MalformedMessage(f"not a stream entry id: {text!r}") from None


class _Reload(Exception):
    """Internal: the stream cannot be trusted from here; re-read the hashes."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Stale(Exception):
    """Internal: Redis answered with a state older than the one held."""


class AccountMirror:
    """A live, typed copy of one account's balances, positions and open orders."""

    def __init__(
        self,
        redis: aioredis.Redis,
        account_id: str,
        prefix: str = "acctstate",
        block_ms: int = 1000,
        *,
        count: int = 1000,
        fills_maxlen: int = 1000,
        on_change: Optional[ChangeCallback] = None,
        on_fill: Optional[FillCallback] = None,
        on_resync: Optional[ResyncCallback] = None,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
        io_timeout: float = 5.0,
    ) -> None:
        self.redis = redis
        self.account_id = account_id
        self.prefix = prefix
        base = f"{prefix}:{account_id}"
        self.key_balances = f"{base}:balances"
        self.key_positions = f"{base}:positions"
        self.key_open_orders = f"{base}:open_orders"
        self.key_seq = f"{base}:seq"
        self.key_changes = f"{base}:changes"
        self.block_ms = block_ms
        self.count = count
        self.on_change = on_change
        self.on_fill = on_fill
        self.on_resync = on_resync
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.io_timeout = io_timeout
        self.state = AccountState(fills_maxlen)
        self.stats = MirrorStats()
        self.started = False
        self._last_id: StreamId = (0, 0)
        self._reload_reason: Optional[str] = None
        self._resume_check = False
        self._stopping = asyncio.Event()
        self._queues: list[asyncio.Queue[Any]] = []

    # --- the state ---------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the last change reflected in the state (0 before any)."""
        return self.state.seq

    @property
    def balances(self) -> dict[str, Balance]:
        """By asset."""
        return self.state.balances

    @property
    def positions(self) -> dict[str, Position]:
        """By ``SYMBOL:SIDE``."""
        return self.state.positions

    @property
    def open_orders(self) -> dict[str, Order]:
        """By ``SYMBOL:ORDERID``; an order leaves when it reaches a final status."""
        return self.state.open_orders

    @property
    def fills(self) -> "deque[Fill]":
        """Fills seen in the stream since start, oldest first (bounded by ``fills_maxlen``)."""
        return self.state.fills

    @property
    def last_id(self) -> StreamId:
        """The stream position the next XREAD starts after."""
        return self._last_id

    # --- reading Redis -------------------------------------------------------------------

    async def _io(self, aw: Awaitable[Any], extra: float = 0.0) -> Any:
        # A guard against half-open sockets: the caller's client may have no socket timeout.
        return await asyncio.wait_for(aw, timeout=self.io_timeout + extra)

    async def read_snapshot(self) -> Snapshot:
        """One MULTI/EXEC read of the three hashes and ``P:seq`` (does not change the mirror)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key_balances)
            pipe.hgetall(self.key_positions)
            pipe.hgetall(self.key_open_orders)
            pipe.get(self.key_seq)
            b, p, o, s = await self._io(pipe.execute())
        return parse_snapshot(b, p, o, s)

    async def _load(self, reason: str) -> None:
        """Re-reads the state; a read older than what is held is refused and retried later."""
        snap = await self.read_snapshot()
        if not self.state.replace(snap):
            self.stats.stale_snapshots += 1
            self._reload_reason = reason
            log.warning(
                "acctstate: %s: Redis holds seq %d, older than the %d held; retrying",
                self.key_seq, snap.seq, self.state.seq,
            )
            raise _Stale()
        self._reload_reason = None
        self.stats.snapshot_loads += 1
        self._last_id = max(self._last_id, (snap.seq, 0))

    async def start(self) -> None:
        """Late join: one atomic read of the hashes and ``P:seq``."""
        await self._load("start")
        self.started = True
        self._resume_check = False

    # --- following the stream -----------------------------------------------------------

    async def _check_resume(self) -> None:
        """After a disconnect: may the stream go on from ``last_id``? Else re-read."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(self.key_changes, "-", "+", count=1)
            pipe.get(self.key_seq)
            first, raw_seq = await self._io(pipe.execute())
        self._resume_check = False
        if first:
            fid = parse_stream_id(first[0][0])
            if fid <= self._last_id or fid[0] <= self._last_id[0] + 1:
                self.stats.stream_resumes += 1
                return
            raise _Reload("fallback")
        if parse_seq(raw_seq) > self.state.seq:
            raise _Reload("fallback")  # the stream is gone (or off) but P:seq moved on
        self.stats.stream_resumes += 1  # nothing newer anywhere: wait in the stream

    async def _check_idle(self) -> None:
        """An XREAD that timed out: does ``P:seq`` run ahead of a stream that lacks it?"""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.key_seq)
            pipe.xrevrange(self.key_changes, "+", "-", count=1)
            raw_seq, last = await self._io(pipe.execute())
        seq = parse_seq(raw_seq)
        if seq > self.state.seq and (not last or parse_stream_id(last[0][0])[0] < seq):
            raise _Reload("fallback")

    async def _check_gap(self) -> None:
        """XREAD jumped over seqs: were entries after ``last_id`` trimmed away?"""
        got = await self._io(self.redis.xrange(self.key_changes, "-", "+", count=1))
        if not got or parse_stream_id(got[0][0]) > self._last_id:
            raise _Reload("fallback")

    async def _read(self) -> list[tuple[StreamId, Any]]:
        reply = await self._io(
            self.redis.xread(
                {self.key_changes: f"{self._last_id[0]}-{self._last_id[1]}"},
                count=self.count,
                block=self.block_ms,
            ),
            extra=self.block_ms / 1000,
        )
        if not reply:
            return []
        streams = reply.items() if isinstance(reply, dict) else reply  # RESP3 / RESP2
        out: list[tuple[StreamId, Any]] = []
        for _key, entries in streams:
            first = entries[0] if entries else None
            if isinstance(first, list) and first and isinstance(first[0], (list, tuple)):
                entries = first  # redis-py's RESP3 parser nests the entries once more
            for eid, fields in entries:
                out.append((parse_stream_id(eid), fields))
        return out

    @staticmethod
    def _message(fields: Any) -> Any:
        if isinstance(fields, dict):
            m = fields.get(b"m", fields.get("m"))
        else:  # a flat [field, value, ...] list
            pairs = dict(zip(fields[::2], fields[1::2]))
            m = pairs.get(b"m", pairs.get("m"))
        if m is None:
            raise MalformedMessage("stream entry without the field 'm'")
        return m

    async def _process(self, entries: list[tuple[StreamId, Any]]) -> None:
        if entries and entries[0][0][0] > self._last_id[0] + 1:
            await self._check_gap()
        for eid, fields in entries:
            if eid <= self._last_id:
                continue
            try:
                change = parse_change(self._message(fields))
            except (MalformedMessage, UnicodeDecodeError) as e:
                self.stats.malformed += 1
                log.error("acctstate: %s entry %d-%d is malformed (%s): re-reading the state",
                          self.key_changes, eid[0], eid[1], e)
                self._last_id = eid
                raise _Reload("malformed") from None
            if change.seq != eid[0]:
                self.stats.id_mismatches += 1
                log.warning("acctstate: %s entry %d-%d carries seq %d",
                            self.key_changes, eid[0], eid[1], change.seq)
            self._last_id = eid
            if change.is_resync:
                self.stats.resyncs += 1
                await self._reload("resync")
                continue
            if self.state.apply(change):
                self.stats.applied += 1
                await self._emit(change)
            else:
                self.stats.skipped += 1

    async def _reload(self, reason: str) -> None:
        self._reload_reason = reason
        await self._load(reason)
        await self._call(self.on_resync, reason)

    async def step(self) -> None:
        """One round: a pending re-read or resume check, then one XREAD and its entries."""
        if not self.started:
            await self.start()
            return
        try:
            if self._reload_reason is not None:
                await self._reload(self._reload_reason)
                return
            if self._resume_check:
                await self._check_resume()
            entries = await self._read()
            if entries:
                await self._process(entries)
            else:
                await self._check_idle()
        except _Reload as r:
            if r.reason == "fallback":
                self.stats.fallbacks += 1
            await self._reload(r.reason)

    async def run(self) -> None:
        """Follows the account until :meth:`stop` (starts first if needed)."""
        delay = self.backoff_min
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                step = asyncio.ensure_future(self.step())
                done, _ = await asyncio.wait({step, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done:
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    break
                try:
                    step.result()
                    delay = self.backoff_min
                    continue
                except _Stale:
                    pass  # Redis is behind us (restarted, not yet rewritten): wait for it
                except TRANSIENT_ERRORS as e:
                    self.stats.disconnects += 1
                    self._resume_check = self._reload_reason is None
                    log.warning("acctstate: Redis error (%s: %s); retrying in %.2fs",
                                type(e).__name__, e, delay)
                await self._sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.backoff_max)
        finally:
            stop_wait.cancel()
            for q in self._queues:
                q.put_nowait(_STOP)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        """Ends :meth:`run` (and every :meth:`changes` iterator) soon."""
        self._stopping.set()

    # --- delivery --------------------------------------------------------------------------

    async def _call(self, cb: Optional[Callable[[Any], Any]], arg: Any) -> None:
        if cb is None:
            return
        try:
            r = cb(arg)
            if inspect.isawaitable(r):
                await r
        except Exception:  # a consumer's bug must not stop the mirror
            self.stats.callback_errors += 1
            log.exception("acctstate: callback %r raised", cb)

    async def _emit(self, change: Change) -> None:
        for q in self._queues:
            q.put_nowait(change)
        if isinstance(change.entity, Fill):
            await self._call(self.on_fill, change.entity)
        await self._call(self.on_change, change)

    def changes(self) -> "ChangeIterator":
        """Every change applied from this call on, in seq order, until :meth:`stop`.

        ``async for change in mirror.changes(): ...``. State re-reads (resync, fallback) are
        not changes: ``on_resync`` reports them.
        """
        return ChangeIterator(self._queues)
