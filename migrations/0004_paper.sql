-- The paper executor's ledger (SPEC B6). Money is NUMERIC (exact, no scale limit, so a fee
-- of 0.05 % of a fill is stored to the last digit); every time is timestamptz.
-- The CHECK constraints back the code (DESIGN invariant 5): a bug that would overdraw the
-- balance or leave a non-positive position aborts its transaction instead.

CREATE TABLE accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    balance    numeric     NOT NULL CHECK (balance >= 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- One open position per (account, market): the primary key makes a second one impossible.
-- `cost` is Σ (quantity × fill + fee) of the buys still held, so a closing sell's
-- PnL = proceeds − cost is exact; `avg_price` is the quantity-weighted fill price.
CREATE TABLE positions (
    account_id      bigint      NOT NULL REFERENCES accounts (id),
    market          text        NOT NULL,
    quantity        numeric     NOT NULL CHECK (quantity > 0),
    avg_price       numeric     NOT NULL CHECK (avg_price > 0),
    entry_filled_at timestamptz NOT NULL,
    fees            numeric     NOT NULL CHECK (fees >= 0),
    cost            numeric     NOT NULL CHECK (cost > 0),
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (account_id, market)
);

-- Every order decision that reached the executor, keyed by the client order id so a retried
-- execution finds it (DESIGN invariant 6). Refused orders change nothing and are not here.
CREATE TABLE orders (
    client_order_id    text        PRIMARY KEY,
    account_id         bigint      NOT NULL REFERENCES accounts (id),
    market             text        NOT NULL,
    side               text        NOT NULL CHECK (side IN ('buy', 'sell')),
    requested_notional numeric     CHECK (requested_notional > 0),
    requested_quantity numeric     CHECK (requested_quantity > 0),
    state              text        NOT NULL CHECK (state IN ('filled', 'expired')),
    decided_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL,
    reason             text
);
CREATE INDEX orders_account_idx ON orders (account_id, created_at);

-- At most one fill per order: the unique client order id.
CREATE TABLE fills (
    client_order_id text        PRIMARY KEY REFERENCES orders (client_order_id),
    price           numeric     NOT NULL CHECK (price > 0),
    quantity        numeric     NOT NULL CHECK (quantity > 0),
    fee             numeric     NOT NULL CHECK (fee >= 0),
    filled_at       timestamptz NOT NULL
);

-- Closed round trips (a partial sell closes its share of the position). Unique on the
-- exit's client order id: one trade per exit fill.
CREATE TABLE trades (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exit_client_order_id text        NOT NULL UNIQUE REFERENCES orders (client_order_id),
    account_id           bigint      NOT NULL REFERENCES accounts (id),
    market               text        NOT NULL,
    entry_time           timestamptz NOT NULL,
    entry_price          numeric     NOT NULL,
    exit_time            timestamptz NOT NULL,
    exit_price           numeric     NOT NULL,
    quantity             numeric     NOT NULL CHECK (quantity > 0),
    entry_fee            numeric     NOT NULL,
    exit_fee             numeric     NOT NULL,
    cost                 numeric     NOT NULL,
    proceeds             numeric     NOT NULL,
    pnl                  numeric     NOT NULL,
    exit_reason          text        NOT NULL
);
CREATE INDEX trades_account_exit_idx ON trades (account_id, exit_time);
