"""Python client of acctstate: a live, typed mirror of one Binance account from Redis.

>>> import redis.asyncio as redis
>>> from acctstate_client import AccountMirror
>>> mirror = AccountMirror(redis.Redis(), "main")      # doctest: +SKIP
>>> await mirror.start(); asyncio.create_task(mirror.run())  # doctest: +SKIP
"""

from .mirror import AccountMirror, ChangeIterator, MirrorStats, parse_stream_id
from .state import AccountState, Snapshot, parse_snapshot
from .types import (
    FINAL_ORDER_STATUSES,
    OPEN_ORDER_STATUSES,
    Balance,
    Change,
    Entity,
    Fill,
    Kind,
    MalformedMessage,
    Order,
    Position,
    Status,
    parse_change,
    parse_entity,
)

__version__ = "0.1.0"

__all__ = [
    "FINAL_ORDER_STATUSES",
    "OPEN_ORDER_STATUSES",
    "AccountMirror",
    "AccountState",
    "Balance",
    "Change",
    "ChangeIterator",
    "Entity",
    "Fill",
    "Kind",
    "MalformedMessage",
    "MirrorStats",
    "Order",
    "Position",
    "Snapshot",
    "Status",
    "parse_change",
    "parse_entity",
    "parse_snapshot",
    "parse_stream_id",
]
