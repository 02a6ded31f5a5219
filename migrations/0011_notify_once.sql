-- Notifications that must go out once per key however often their producer runs (the
-- stale-candle alert: one per market and hour). A notify job's unique key only holds while
-- the job is live, so once it was posted the next collection cycle could alert again; this
-- row, written in the producer's transaction, says the key was used. Small: one row per
-- market and hour of an outage.
CREATE TABLE notify_once (
    key     text PRIMARY KEY,
    sent_at timestamptz NOT NULL
);
