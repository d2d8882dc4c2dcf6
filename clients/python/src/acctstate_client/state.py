"""The account state a client holds, and the pure rules that change it (no I/O).

:class:`AccountState` is what :class:`~acctstate_client.mirror.AccountMirror` keeps; it is
usable on its own (e.g. over pub/sub, contract §4 late-join protocol) and unit-testable
without Redis. Its invariants: ``seq`` never goes backwards and no change is applied twice
(a change whose seq is not above ``seq`` is refused), final orders leave ``open_orders``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, TypeVar, Union

from .types import (
    Balance,
    Change,
    Fill,
    MalformedMessage,
    Order,
    Position,
    parse_balance,
    parse_order,
    parse_position,
)

__all__ = ["AccountState", "Snapshot", "decode_text", "parse_snapshot"]

RawText = Union[str, bytes, bytearray]


def decode_text(v: RawText) -> str:
    """Redis replies are bytes unless the client was built with ``decode_responses=True``."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8")
    return v


def parse_seq(raw: RawText | None) -> int:
    """``P:seq`` as an int; 0 when the key does not exist (nothing written yet / Redis empty)."""
    if raw is None:
        return 0
    text = decode_text(raw)
    try:
        return int(text)
    except ValueError:
        raise MalformedMessage(f"P:seq holds {text!r}, not an integer") from None


@dataclass(frozen=True)
class Snapshot:
    """One atomic read of ``P:balances``, ``P:positions``, ``P:open_orders`` and ``P:seq``."""

    seq: int
    balances: dict[str, Balance] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


K = TypeVar("K", bound=_Keyed)


def _hash(
    raw: Mapping[RawText, RawText] | None, parse: Callable[[str], K], name: str
) -> dict[str, K]:
    out: dict[str, K] = {}
    for k, v in (raw or {}).items():
        key = decode_text(k)
        try:
            entity = parse(decode_text(v))
        except MalformedMessage as e:
            raise MalformedMessage(f"{name} field {key!r}: {e}") from None
        if entity.key != key:
            raise MalformedMessage(f"{name} field {key!r} holds the entity keyed {entity.key!r}")
        out[key] = entity
    return out


def parse_snapshot(
    balances: Mapping[RawText, RawText] | None,
    positions: Mapping[RawText, RawText] | None,
    open_orders: Mapping[RawText, RawText] | None,
    seq: RawText | None,
) -> Snapshot:
    """A :class:`Snapshot` from the replies of HGETALL ×3 and GET (bytes or str)."""
    orders = _hash(open_orders, parse_order, "P:open_orders")
    finished = [k for k, o in orders.items() if o.is_final]
    if finished:
        raise MalformedMessage(f"P:open_orders holds finished orders: {finished[:5]}")
    return Snapshot(
        seq=parse_seq(seq),
        balances=_hash(balances, parse_balance, "P:balances"),
        positions=_hash(positions, parse_position, "P:positions"),
        open_orders=orders,
    )


class AccountState:
    """Balances, positions, open orders and recent fills at ``seq``."""

    def __init__(self, fills_maxlen: int = 1000) -> None:
        self.seq: int = 0
        self.balances: dict[str, Balance] = {}
        self.positions: dict[str, Position] = {}
        self.open_orders: dict[str, Order] = {}
        #: Fills seen in changes (never in the hashes), oldest first, bounded.
        self.fills: deque[Fill] = deque(maxlen=fills_maxlen)

    def replace(self, snap: Snapshot) -> bool:
        """Takes the snapshot's state; refuses (False) one older than what is held."""
        if snap.seq < self.seq:
            return False
        self.balances = dict(snap.balances)
        self.positions = dict(snap.positions)
        self.open_orders = dict(snap.open_orders)
        self.seq = snap.seq
        return True

    def apply(self, change: Change) -> bool:
        """Applies a change with a seq above ``seq`` (True); refuses any other (False)."""
        if change.seq <= self.seq:
            return False
        e = change.entity
        if isinstance(e, Balance):
            self.balances[e.key] = e
        elif isinstance(e, Position):
            self.positions[e.key] = e
        elif isinstance(e, Order):
            if e.is_final:
                self.open_orders.pop(e.key, None)
            else:
                self.open_orders[e.key] = e
        elif isinstance(e, Fill):
            self.fills.append(e)
        # A status change carries no state: only its seq moves ours.
        self.seq = change.seq
        return True

    def same_state(self, snap: Snapshot) -> bool:
        """True when this state equals ``snap`` (seq, balances, positions, open orders)."""
        return (
            self.seq == snap.seq
            and self.balances == snap.balances
            and self.positions == snap.positions
            and self.open_orders == snap.open_orders
        )
