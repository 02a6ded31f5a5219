-- The trading bot's own records (SPEC B3–B5, B7): the signals `evaluate_signal` decided,
-- the AI decisions of `ai_review`, and the risk manager's state. Money is NUMERIC,
-- indicators float8 (SPEC B2), every time timestamptz, days are Asia/Seoul dates.

-- One evaluation per (account, market, candle): a second run over the same candle (a
-- catch-up fire, a manual trigger) finds this row instead of deciding again, so its
-- buy carries the same client order id and cannot fill twice.
CREATE TABLE signals (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint      NOT NULL REFERENCES accounts (id),
    market           text        NOT NULL,
    candle_open_time timestamptz NOT NULL,
    decided_at       timestamptz NOT NULL,
    signal           text        NOT NULL CHECK (signal IN ('entry', 'exit', 'none')),
    -- Why: the exit rule, the risk refusal, or why no entry (warm-up, no signal).
    reason           text        NOT NULL,
    close            numeric     NOT NULL CHECK (close > 0),
    regime           text,
    regime_distance  float8,
    rsi14            float8,
    rsi7             float8,
    ma200            float8,
    bb_lower         float8,
    bb_middle        float8,
    bb_upper         float8,
    volume_ratio     float8,
    -- An entry's budget: 20 % of the balance at the decision (SPEC B8).
    notional         numeric     CHECK (notional > 0),
    job_id           bigint,
    created_at       timestamptz NOT NULL,
    UNIQUE (account_id, market, candle_open_time)
);
CREATE INDEX signals_decided_idx ON signals (decided_at);

-- Every AI decision, saved in the transaction that completes the review step and so
-- enqueues the buy (SPEC B4). One review per signal; market notes have no signal.
CREATE TABLE ai_decisions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signal_id     bigint REFERENCES signals (id),
    kind          text        NOT NULL CHECK (kind IN ('entry_review', 'market_review')),
    market        text        NOT NULL,
    provider      text        NOT NULL,
    model         text        NOT NULL,
    verdict       text        CHECK (verdict IN ('CONFIRM', 'REJECT')),
    confidence    smallint    CHECK (confidence BETWEEN 0 AND 100),
    confirmed     boolean     NOT NULL DEFAULT false,
    -- The reasoning of a review, the text of a market note.
    reasoning     text        NOT NULL,
    error         text,
    latency_ms    bigint      NOT NULL CHECK (latency_ms >= 0),
    input_tokens  bigint,
    output_tokens bigint,
    cost_usd      numeric,
    job_id        bigint,
    decided_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    CHECK ((kind = 'entry_review') = (signal_id IS NOT NULL AND verdict IS NOT NULL))
);
CREATE UNIQUE INDEX ai_decisions_signal_uq ON ai_decisions (signal_id) WHERE signal_id IS NOT NULL;
CREATE INDEX ai_decisions_decided_idx ON ai_decisions (decided_at);

-- The risk manager's per-account state that survives midnight (SPEC B5): the loss
-- streak, the cooldown, and the kill switch.
CREATE TABLE risk_state (
    account_id        bigint      PRIMARY KEY REFERENCES accounts (id),
    loss_streak       integer     NOT NULL DEFAULT 0 CHECK (loss_streak >= 0),
    cooldown_until    timestamptz,
    -- Set when the end of `cooldown_until` was announced (the "cooldown reset").
    cooldown_ended_announced boolean NOT NULL DEFAULT false,
    halted            boolean     NOT NULL DEFAULT false,
    halted_reason     text,
    updated_at        timestamptz NOT NULL
);

-- One row per account and Seoul day, created by whichever comes first: the
-- `reset_daily_risk` job, a decision or a fill of that day (the primary key makes the
-- race harmless: `ON CONFLICT DO NOTHING`).
CREATE TABLE risk_days (
    account_id       bigint      NOT NULL REFERENCES accounts (id),
    day              date        NOT NULL,
    day_start_equity numeric     NOT NULL CHECK (day_start_equity >= 0),
    realized_pnl     numeric     NOT NULL DEFAULT 0,
    entries          integer     NOT NULL DEFAULT 0 CHECK (entries >= 0),
    loss_limit_announced boolean NOT NULL DEFAULT false,
    -- Set when the day's starting equity was announced (by `reset_daily_risk`).
    start_announced  boolean     NOT NULL DEFAULT false,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (account_id, day)
);
