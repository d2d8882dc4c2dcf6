"""What the mirror hands out besides its state: the change iterator and its counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .types import Change

__all__ = ["STOP", "ChangeIterator", "MirrorStats"]

#: Put in every iterator's queue when the mirror stops.
STOP: Any = object()


@dataclass
class MirrorStats:
    """Counters, so that callers and tests can see what the mirror did."""

    snapshot_loads: int = 0  #: atomic reads of the hashes + P:seq that were applied
    stale_snapshots: int = 0  #: reads refused: older than the state held (retried)
    stream_resumes: int = 0  #: reconnects that went on from the stream, without a hash read
    fallbacks: int = 0  #: hash re-reads because the stream no longer covered the held seq
    resyncs: int = 0  #: resync statuses met in the stream (each followed by a hash read)
    applied: int = 0  #: changes applied
    skipped: int = 0  #: entries at or below the held seq (already covered)
    disconnects: int = 0  #: connection errors and timeouts survived
    malformed: int = 0  #: entries that did not parse (the hashes were re-read instead)
    id_mismatches: int = 0  #: entries whose id disagreed with their message's seq
    callback_errors: int = 0  #: exceptions raised by on_change / on_fill / on_resync


class ChangeIterator:
    """An async iterator of applied changes; subscribed from its creation on."""

    def __init__(self, queues: "list[asyncio.Queue[Any]]") -> None:
        self._queues = queues
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._done = False
        queues.append(self._q)

    def __aiter__(self) -> "ChangeIterator":
        return self

    async def __anext__(self) -> Change:
        if self._done:
            raise StopAsyncIteration
        item = await self._q.get()
        if item is STOP:
            self.close()
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Unsubscribes (also done when the mirror stops)."""
        if not self._done:
            self._done = True
            if self._q in self._queues:
                self._queues.remove(self._q)
