-- The Upbit live executor (SPEC B6). The ledger (orders, fills, trades, positions, accounts)
-- is the paper executor's; these tables keep what only the exchange knows: its order uuid,
-- the order's state as last polled, and every trade of a partially filled order.

-- One exchange order per client order id (our `identifier` on Upbit): a retried execution
-- finds it here or on the exchange by identifier and never places a second one.
CREATE TABLE live_orders (
    client_order_id text        PRIMARY KEY,
    exchange_uuid   text        NOT NULL UNIQUE,
    market          text        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('buy', 'sell')),
    state           text        NOT NULL,
    executed_volume numeric     NOT NULL CHECK (executed_volume >= 0),
    paid_fee        numeric     NOT NULL CHECK (paid_fee >= 0),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- The trades (partial fills) of a live order as they are polled; unique by the exchange's
-- trade uuid, so polling the same trade twice records it once.
CREATE TABLE live_fills (
    trade_uuid      text        PRIMARY KEY,
    client_order_id text        NOT NULL REFERENCES live_orders (client_order_id),
    price           numeric     NOT NULL CHECK (price > 0),
    volume          numeric     NOT NULL CHECK (volume > 0),
    funds           numeric     NOT NULL CHECK (funds >= 0),
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX live_fills_order_idx ON live_fills (client_order_id);

-- A live position worth less than Upbit's minimum order cannot be sold: it is marked dust
-- (and alerted) instead of failing every exit attempt.
ALTER TABLE positions ADD COLUMN dust boolean NOT NULL DEFAULT false;
