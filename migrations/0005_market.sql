-- Market data (SPEC B1). One row per (market, interval, open time): the primary key is what
-- the collector's `ON CONFLICT … DO UPDATE` targets, so a still-forming candle fetched twice
-- is updated in place, never duplicated. Prices and volume are NUMERIC (exact).
CREATE TABLE candles (
    market     text        NOT NULL,
    interval   text        NOT NULL,
    open_time  timestamptz NOT NULL,
    open       numeric     NOT NULL CHECK (open > 0),
    high       numeric     NOT NULL CHECK (high > 0),
    low        numeric     NOT NULL CHECK (low > 0 AND low <= high),
    close      numeric     NOT NULL CHECK (close > 0),
    volume     numeric     NOT NULL CHECK (volume >= 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (market, interval, open_time)
);

-- Minutes confirmed to have no candle (no trades: Upbit serves none), so gap detection
-- stops asking for them and a backfill terminates.
CREATE TABLE empty_minutes (
    market       text        NOT NULL,
    interval     text        NOT NULL,
    open_time    timestamptz NOT NULL,
    confirmed_at timestamptz NOT NULL,
    PRIMARY KEY (market, interval, open_time)
);
