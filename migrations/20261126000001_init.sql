-- acctstate schema (contract §3). Decimals are NUMERIC, times TIMESTAMPTZ from the exchange.

CREATE TABLE balances (
    account_id           TEXT        NOT NULL,
    asset                TEXT        NOT NULL,
    free                 NUMERIC     NOT NULL,
    locked               NUMERIC     NOT NULL,
    total                NUMERIC     NOT NULL,
    wallet_balance       NUMERIC,
    cross_wallet_balance NUMERIC,
    seq                  BIGINT      NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, asset)
);

CREATE TABLE positions (
    account_id      TEXT        NOT NULL,
    symbol          TEXT        NOT NULL,
    position_side   TEXT        NOT NULL,
    amount          NUMERIC     NOT NULL,
    entry_price     NUMERIC     NOT NULL,
    breakeven_price NUMERIC     NOT NULL,
    unrealized_pnl  NUMERIC     NOT NULL,
    realized_pnl    NUMERIC     NOT NULL,
    margin_type     TEXT        NOT NULL,
    isolated_wallet NUMERIC     NOT NULL,
    seq             BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, symbol, position_side)
);

-- USD-M algo (conditional) orders are stored with order_id = -algo_id.
CREATE TABLE orders (
    account_id      TEXT        NOT NULL,
    symbol          TEXT        NOT NULL,
    order_id        BIGINT      NOT NULL,
    client_order_id TEXT        NOT NULL,
    side            TEXT        NOT NULL,
    order_type      TEXT        NOT NULL,
    time_in_force   TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    price           NUMERIC     NOT NULL,
    stop_price      NUMERIC     NOT NULL,
    orig_qty        NUMERIC     NOT NULL,
    executed_qty    NUMERIC     NOT NULL,
    cum_quote_qty   NUMERIC     NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    seq             BIGINT      NOT NULL,
    PRIMARY KEY (account_id, symbol, order_id)
);
CREATE INDEX orders_open ON orders (account_id, status)
    WHERE status IN ('NEW', 'PARTIALLY_FILLED', 'PENDING_NEW', 'PENDING_CANCEL', 'TRIGGERING');

CREATE TABLE fills (
    account_id       TEXT        NOT NULL,
    symbol           TEXT        NOT NULL,
    trade_id         BIGINT      NOT NULL,
    order_id         BIGINT      NOT NULL,
    side             TEXT        NOT NULL,
    price            NUMERIC     NOT NULL,
    qty              NUMERIC     NOT NULL,
    quote_qty        NUMERIC     NOT NULL,
    commission       NUMERIC     NOT NULL,
    commission_asset TEXT,
    is_maker         BOOLEAN     NOT NULL,
    realized_pnl     NUMERIC,
    traded_at        TIMESTAMPTZ NOT NULL,
    seq              BIGINT      NOT NULL,
    PRIMARY KEY (account_id, symbol, trade_id)
);
CREATE INDEX fills_order ON fills (account_id, symbol, order_id);

CREATE TABLE account_changes (
    account_id  TEXT        NOT NULL,
    seq         BIGINT      NOT NULL,
    kind        TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    data        JSONB       NOT NULL,
    source      TEXT        NOT NULL CHECK (source IN ('stream', 'snapshot')),
    event_time  TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX account_changes_key ON account_changes (account_id, kind, key, seq);
