"""The acctstate wire types (contract §4): frozen dataclasses parsed from the daemon's JSON.

Every amount is a :class:`~decimal.Decimal` built from the JSON string the daemon sends (never
through ``float``); ids and times are Python ``int`` (exact, also above 2**53). Fields this
version does not know are ignored; a missing or mistyped field raises :class:`MalformedMessage`
naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Literal, Mapping, Union

__all__ = [
    "FINAL_ORDER_STATUSES",
    "OPEN_ORDER_STATUSES",
    "Balance",
    "Change",
    "Entity",
    "Fill",
    "Kind",
    "MalformedMessage",
    "Order",
    "Position",
    "Status",
    "parse_balance",
    "parse_change",
    "parse_entity",
    "parse_fill",
    "parse_json",
    "parse_order",
    "parse_position",
    "parse_status",
]

Kind = Literal["balance", "position", "order", "fill", "status"]
KINDS: frozenset[str] = frozenset({"balance", "position", "order", "fill", "status"})

#: Statuses after which an order leaves the open set (and ``P:open_orders``).
FINAL_ORDER_STATUSES: frozenset[str] = frozenset(
    {"FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH", "TRIGGERED", "FINISHED"}
)
#: Statuses of an order that is still open.
OPEN_ORDER_STATUSES: frozenset[str] = frozenset(
    {"NEW", "PENDING_NEW", "PARTIALLY_FILLED", "PENDING_CANCEL", "TRIGGERING"}
)


class MalformedMessage(ValueError):
    """A message or hash value that does not have the contract's shape."""


# --- field readers -------------------------------------------------------------------------

Obj = Mapping[str, Any]


def _require(obj: Obj, name: str, what: str) -> Any:
    if name not in obj:
        raise MalformedMessage(f"{what}: missing field {name!r}")
    return obj[name]


def _str(obj: Obj, name: str, what: str) -> str:
    v = _require(obj, name, what)
    if not isinstance(v, str):
        raise MalformedMessage(f"{what}: field {name!r} must be a string, got {v!r}")
    return v


def _opt_str(obj: Obj, name: str, what: str) -> str | None:
    if obj.get(name) is None:
        return None
    return _str(obj, name, what)


def _int(obj: Obj, name: str, what: str) -> int:
    v = _require(obj, name, what)
    # bool is an int subclass; a float (or a Decimal from parse_float) is not an exact id.
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedMessage(f"{what}: field {name!r} must be a JSON integer, got {v!r}")
    return v


def _bool(obj: Obj, name: str, what: str) -> bool:
    v = _require(obj, name, what)
    if not isinstance(v, bool):
        raise MalformedMessage(f"{what}: field {name!r} must be a boolean, got {v!r}")
    return v


def _dec(obj: Obj, name: str, what: str) -> Decimal:
    v = _require(obj, name, what)
    if not isinstance(v, str):
        raise MalformedMessage(
            f"{what}: field {name!r} must be a decimal string (contract §4), got {v!r}"
        )
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise MalformedMessage(f"{what}: field {name!r} is not a decimal: {v!r}") from None
    if not d.is_finite():
        raise MalformedMessage(f"{what}: field {name!r} is not a finite decimal: {v!r}")
    return d


def _opt_dec(obj: Obj, name: str, what: str) -> Decimal | None:
    if obj.get(name) is None:
        return None
    return _dec(obj, name, what)


def _obj(v: Any, what: str) -> Obj:
    if not isinstance(v, Mapping):
        raise MalformedMessage(f"{what}: expected a JSON object, got {type(v).__name__}")
    return v


def parse_json(text: str | bytes | bytearray) -> Any:
    """``json.loads`` that keeps ints exact and never turns a number into a float."""
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"not valid JSON: {e}") from None


def _load(value: Obj | str | bytes | bytearray, what: str) -> Obj:
    if isinstance(value, (str, bytes, bytearray)):
        value = parse_json(value)
    return _obj(value, what)


# --- entities ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal
    total: Decimal
    updated_at: int
    #: USD-M futures only.
    wallet_balance: Decimal | None = None
    #: USD-M futures only.
    cross_wallet_balance: Decimal | None = None

    @property
    def key(self) -> str:
        """The field in ``P:balances``."""
        return self.asset


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    position_side: str
    amount: Decimal
    entry_price: Decimal
    breakeven_price: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    margin_type: str
    isolated_wallet: Decimal
    updated_at: int

    @property
    def key(self) -> str:
        """The field in ``P:positions``: ``SYMBOL:SIDE``."""
        return f"{self.symbol}:{self.position_side}"


@dataclass(frozen=True, slots=True)
class Order:
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    order_type: str
    time_in_force: str
    status: str
    price: Decimal
    stop_price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal
    cum_quote_qty: Decimal
    created_at: int
    updated_at: int

    @property
    def key(self) -> str:
        """The field in ``P:open_orders``: ``SYMBOL:ORDERID``."""
        return f"{self.symbol}:{self.order_id}"

    @property
    def is_final(self) -> bool:
        """True once the order has left the open set (it never changes again)."""
        return self.status in FINAL_ORDER_STATUSES


@dataclass(frozen=True, slots=True)
class Fill:
    symbol: str
    trade_id: int
    order_id: int
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str | None
    is_maker: bool
    traded_at: int
    #: USD-M futures only.
    realized_pnl: Decimal | None = None

    @property
    def key(self) -> str:
        return f"{self.symbol}:{self.trade_id}"


@dataclass(frozen=True, slots=True)
class Status:
    """A status event of the daemon: ``connected``, ``disconnected``, ``resync``, ..."""

    event: str
    detail: str | None = None


Entity = Union[Balance, Position, Order, Fill, Status]


def parse_balance(value: Obj | str | bytes) -> Balance:
    o, w = _load(value, "balance"), "balance"
    return Balance(
        asset=_str(o, "asset", w),
        free=_dec(o, "free", w),
        locked=_dec(o, "locked", w),
        total=_dec(o, "total", w),
        updated_at=_int(o, "updated_at", w),
        wallet_balance=_opt_dec(o, "wallet_balance", w),
        cross_wallet_balance=_opt_dec(o, "cross_wallet_balance", w),
    )


def parse_position(value: Obj | str | bytes) -> Position:
    o, w = _load(value, "position"), "position"
    return Position(
        symbol=_str(o, "symbol", w),
        position_side=_str(o, "position_side", w),
        amount=_dec(o, "amount", w),
        entry_price=_dec(o, "entry_price", w),
        breakeven_price=_dec(o, "breakeven_price", w),
        unrealized_pnl=_dec(o, "unrealized_pnl", w),
        realized_pnl=_dec(o, "realized_pnl", w),
        margin_type=_str(o, "margin_type", w),
        isolated_wallet=_dec(o, "isolated_wallet", w),
        updated_at=_int(o, "updated_at", w),
    )


def parse_order(value: Obj | str | bytes) -> Order:
    o, w = _load(value, "order"), "order"
    return Order(
        symbol=_str(o, "symbol", w),
        order_id=_int(o, "order_id", w),
        client_order_id=_str(o, "client_order_id", w),
        side=_str(o, "side", w),
        order_type=_str(o, "order_type", w),
        time_in_force=_str(o, "time_in_force", w),
        status=_str(o, "status", w),
        price=_dec(o, "price", w),
        stop_price=_dec(o, "stop_price", w),
        orig_qty=_dec(o, "orig_qty", w),
        executed_qty=_dec(o, "executed_qty", w),
        cum_quote_qty=_dec(o, "cum_quote_qty", w),
        created_at=_int(o, "created_at", w),
        updated_at=_int(o, "updated_at", w),
    )


def parse_fill(value: Obj | str | bytes) -> Fill:
    o, w = _load(value, "fill"), "fill"
    return Fill(
        symbol=_str(o, "symbol", w),
        trade_id=_int(o, "trade_id", w),
        order_id=_int(o, "order_id", w),
        side=_str(o, "side", w),
        price=_dec(o, "price", w),
        qty=_dec(o, "qty", w),
        quote_qty=_dec(o, "quote_qty", w),
        commission=_dec(o, "commission", w),
        commission_asset=_opt_str(o, "commission_asset", w),
        is_maker=_bool(o, "is_maker", w),
        traded_at=_int(o, "traded_at", w),
        realized_pnl=_opt_dec(o, "realized_pnl", w),
    )


def parse_status(value: Obj | str | bytes) -> Status:
    o, w = _load(value, "status"), "status"
    return Status(event=_str(o, "event", w), detail=_opt_str(o, "detail", w))


_PARSERS: dict[str, Callable[[Obj | str | bytes], Entity]] = {
    "balance": parse_balance,
    "position": parse_position,
    "order": parse_order,
    "fill": parse_fill,
    "status": parse_status,
}


def parse_entity(kind: str, value: Obj | str | bytes) -> Entity:
    """The entity of ``kind`` from a message's ``data`` (or a hash value)."""
    parser = _PARSERS.get(kind)
    if parser is None:
        raise MalformedMessage(f"unknown kind {kind!r}")
    return parser(value)


# --- the message ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One numbered change of the account: a message of ``P:<kind>`` or an entry of ``P:changes``."""

    seq: int
    kind: Kind
    source: str
    event_time: int
    entity: Entity
    account_id: str
    v: int = 1

    @property
    def status(self) -> Status | None:
        """The status event, for ``kind == "status"``; else None."""
        return self.entity if isinstance(self.entity, Status) else None

    @property
    def is_resync(self) -> bool:
        """The daemon rewrote the state keys from its cache: re-read them."""
        return isinstance(self.entity, Status) and self.entity.event == "resync"


def parse_change(value: Obj | str | bytes | bytearray) -> Change:
    """A :class:`Change` from one message (JSON text, bytes, or an already decoded object)."""
    o, w = _load(value, "message"), "message"
    v = _int(o, "v", w)
    if v != 1:
        raise MalformedMessage(f"message: unsupported protocol version v={v} (this client reads v=1)")
    kind = _str(o, "kind", w)
    if kind not in KINDS:
        raise MalformedMessage(f"message: unknown kind {kind!r}")
    return Change(
        seq=_int(o, "seq", w),
        kind=kind,  # type: ignore[arg-type]  # checked against KINDS above
        source=_str(o, "source", w),
        event_time=_int(o, "event_time", w),
        entity=parse_entity(kind, _obj(_require(o, "data", w), "message.data")),
        account_id=_str(o, "account_id", w),
        v=v,
    )
