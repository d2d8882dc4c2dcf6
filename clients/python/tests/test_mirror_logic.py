"""AccountMirror's resume / fallback / resync decisions, against an in-memory fake Redis."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from acctstate_client import AccountMirror, Change

from fake import FakeDaemon, FakeRedis


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


def scenario(body: Callable[[FakeRedis, FakeDaemon, AccountMirror, list[int]], Awaitable[None]],
             maxlen: int = 100_000) -> AccountMirror:
    async def main() -> AccountMirror:
        r = FakeRedis()
        d = FakeDaemon(r, maxlen=maxlen)
        applied: list[int] = []
        m = AccountMirror(r, "main", block_ms=50, backoff_min=0.001, backoff_max=0.01,  # type: ignore[arg-type]
                          on_change=lambda c: applied.append(c.seq))
        d.balance("BTC", "1")
        d.order(1, "NEW")
        await m.start()
        task = asyncio.create_task(m.run())
        try:
            await body(r, d, m, applied)
            await until(lambda: m.seq == d.seq, f"mirror at seq {d.seq}")
            snap = await m.read_snapshot()
            assert m.state.same_state(snap), (m.seq, snap.seq)
            assert applied == sorted(set(applied)), "a seq applied twice or out of order"
        finally:
            m.stop()
            await asyncio.wait_for(task, 2)
        return m
    return asyncio.run(main())


def test_follows_and_removes_final_orders() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        d.balance("ETH", "2")
        d.order(1, "FILLED")
        await until(lambda: m.seq == d.seq, "caught up")
        assert "ETHUSDT:1" not in m.open_orders and m.balances["ETH"].free == 2
    m = scenario(body)
    assert m.stats.snapshot_loads == 1 and m.stats.applied == 2


def test_disconnect_resumes_from_the_stream_without_a_hash_read() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        r.fail = 3
        for i in range(20):
            d.balance(f"A{i}", str(i))
        await until(lambda: m.stats.disconnects >= 1 and m.seq == d.seq, "resumed")
    m = scenario(body)
    assert m.stats.snapshot_loads == 1 and m.stats.stream_resumes >= 1
    assert m.stats.fallbacks == 0 and m.stats.applied == 20


def test_trimmed_past_falls_back_to_the_hashes() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        r.fail = 10**9  # "disconnected"
        await until(lambda: m.stats.disconnects >= 1, "disconnected")
        for i in range(30):
            d.balance(f"A{i}", str(i))
        r.fail = 0
    m = scenario(body, maxlen=10)
    assert m.stats.fallbacks >= 1 and m.stats.snapshot_loads == 2


def test_gap_while_connected_is_detected() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        m.count = 5  # read slowly: the stream trims past the reader
        for i in range(40):
            d.balance(f"A{i}", str(i))
    m = scenario(body, maxlen=10)
    assert m.stats.fallbacks >= 1


def test_resync_rereads_once_even_at_the_same_seq() -> None:
    reasons: list[str] = []

    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        m.on_resync = reasons.append
        d.silent_balance("XRP", "5")  # lost while Redis was down
        d.resync()
        await until(lambda: "XRP" in m.balances, "resync applied")
        d.resync()  # a second resync at the same seq: id {seq}-1
        await until(lambda: m.stats.resyncs == 2, "second resync")
        d.balance("BTC", "3")
    m = scenario(body)
    assert reasons == ["resync", "resync"] and m.stats.snapshot_loads == 3
    assert m.balances["XRP"].free == 5 and m.balances["BTC"].free == 3


def test_redis_restarted_empty_never_goes_backwards() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        held = m.seq
        d.lose_everything()
        r.fail = 2  # the client notices the restart
        await until(lambda: m.stats.disconnects >= 1, "disconnect seen")
        await asyncio.sleep(0.1)
        assert m.seq == held and "BTC" in m.balances  # empty Redis did not wipe the mirror
        d.silent_balance("BTC", "7")
        d.resync()
        await until(lambda: m.stats.resyncs == 1, "resync")
    m = scenario(body)
    assert m.balances["BTC"].free == 7


def test_stream_gone_while_seq_moved_on_falls_back() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        d.maxlen = 0  # stream switched off (or deleted) while the hashes go on
        r.streams.clear()
        d.balance("ETH", "9")
        await until(lambda: m.stats.fallbacks >= 1, "fallback from the idle check")
    m = scenario(body)
    assert m.balances["ETH"].free == 9


def test_malformed_entry_rereads_the_hashes() -> None:
    async def body(r: FakeRedis, d: FakeDaemon, m: AccountMirror, applied: list[int]) -> None:
        d.balance("ETH", "4", raw=b'{"v":1,"kind":"balance"}')
        d.balance("SOL", "1")
    m = scenario(body)
    assert m.stats.malformed == 1 and m.balances["ETH"].free == 4 and "SOL" in m.balances


def test_changes_iterator_ends_on_stop() -> None:
    async def main() -> list[Any]:
        r = FakeRedis()
        d = FakeDaemon(r)
        m = AccountMirror(r, "main", block_ms=20)  # type: ignore[arg-type]
        d.balance("ETH", "1")
        await m.start()
        it = m.changes()
        task = asyncio.create_task(m.run())
        d.balance("BTC", "1")
        d.order(7, "NEW")
        got: list[Change] = []

        async def consume() -> None:
            async for c in it:
                got.append(c)
                if len(got) == 2:
                    m.stop()
        await asyncio.wait_for(consume(), 5)
        await asyncio.wait_for(task, 2)
        return got
    got = asyncio.run(main())
    assert [c.kind for c in got] == ["balance", "order"]
