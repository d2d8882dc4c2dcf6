"""Integration harness: the real daemon (`acctstate demo`), a private redis-server, a TCP proxy
that can cut the client's connection, and polling helpers with deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("ACCTSTATE_BIN") or REPO / "target" / "debug" / "acctstate")
SHARED_REDIS = os.environ.get("ACCTSTATE_TEST_REDIS", "redis://127.0.0.1:6379")


def require_binary() -> Path:
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.fail(f"the acctstate daemon binary is missing at {BIN}: build it first "
                    f"(`cargo build` in {REPO}) or point ACCTSTATE_BIN at it", pytrace=False)
    return BIN


def unique(name: str) -> str:
    return f"pyt{name}{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(url: str) -> aioredis.Redis:
    """A client without redis-py's own retries, so that a cut surfaces to the mirror."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2)


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout: float,
                diag: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{diag()}")
        await asyncio.sleep(0.02)


class Demo:
    """`acctstate demo` (simulated exchange + daemon) with its own prefix and account."""

    def __init__(self, tmp: Path, redis_url: str, events: int = 8000, rate: int = 2000,
                 maxlen: int | None = None, market: str = "spot") -> None:
        self.prefix, self.account = unique("p"), unique("a")
        self.base = f"{self.prefix}:{self.account}"
        self.redis_url = redis_url
        self.log_path = tmp / f"demo-{self.account}.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ACCTSTATE__") and k not in ("REDIS_URL", "PORT")}
        env.update({
            "REDIS_URL": redis_url,
            "ACCTSTATE__REDIS__PREFIX": self.prefix,
            "ACCTSTATE__ACCOUNT_ID": self.account,
            "ACCTSTATE__HTTP__LISTEN": "127.0.0.1:0",
            "ACCTSTATE__LOG__FORMAT": "json",
        })
        if maxlen is not None:
            env["ACCTSTATE__REDIS__STREAM_MAXLEN"] = str(maxlen)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(require_binary()), "demo", "--market", market, "--rate", str(rate),
             "--events", str(events)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return f"--- daemon log ({self.log_path}), last {n} lines:\n" + "\n".join(lines[-n:])

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    async def wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the demo did not exit within {timeout}s\n{self.tail()}")
            await asyncio.sleep(0.05)
        assert self.proc.returncode == 0, f"demo exited {self.proc.returncode}\n{self.tail()}"

    def close(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        try:  # best effort: leave no keys behind in a shared Redis
            import redis as sync_redis
            r = sync_redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
            r.delete(*[f"{self.base}:{k}" for k in
                       ("balances", "positions", "open_orders", "seq", "changes")])
            r.close()
        except Exception:
            pass


class RedisServer:
    """A private, non-persistent redis-server on a free port; kill() and start() again empty."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
        self.exe, self.tmp, self.port = exe, tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

        async def pong() -> bool:
            r = aioredis.Redis(port=self.port, socket_connect_timeout=0.5)
            try:
                return bool(await r.ping())
            except Exception:
                return False
            finally:
                await r.aclose()
        await until(pong, f"redis-server on port {self.port}", 10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    close = kill


class Proxy:
    """A loopback TCP proxy to Redis whose connections can be cut (the client 'disconnects')."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.refusing:
            cw.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.close()
            return
        self._writers |= {cw, uw}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()
                self._writers.discard(w)
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

    def cut(self) -> None:
        """Closes every proxied connection and refuses new ones until restore()."""
        self.refusing = True
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
