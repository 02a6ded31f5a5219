-- Seeds the dashboard benchmark (docs/BENCHMARKS.md, "Dashboard"): run with psql on a
-- freshly migrated database (`coinpilot migrate`). Takes ~1 min.
-- 1,000,000 jobs shaped like a week of the bot without pruning: mostly completed, some
-- discarded (with an error), cancelled, a due backlog, scheduled retries and running ones.

SET synchronous_commit = off;
WITH kinds AS (
  SELECT ARRAY['collect_candles','evaluate_signal','ai_review','execute_order','notify','prune','noop'] AS k,
         ARRAY['trading','trading','review','trading','notify','maintenance','default'] AS q
)
INSERT INTO jobs (kind, queue, args, run_at, attempt, max_attempts, state, errors, created_at,
                  started_at, finished_at, worker, lease_token, lease_expires_at, enqueued_by)
SELECT k[1 + i % 7], q[1 + i % 7],
       jsonb_build_object('market', 'KRW-BTC', 'unit', '1m', 'n', i),
       t, CASE WHEN st = 'discarded' THEN 5 WHEN st = 'available' THEN 0 ELSE 1 END, 5,
       st::job_state,
       CASE WHEN st = 'discarded' THEN jsonb_build_array(jsonb_build_object(
            'attempt', 5, 'at', t, 'message', 'upstream timed out after 40s (order ' || i || ')', 'chain', '[]'::jsonb))
            ELSE '[]'::jsonb END,
       t,
       CASE WHEN st IN ('completed','discarded','running') THEN t END,
       CASE WHEN st IN ('completed','discarded','cancelled') THEN t + interval '2 seconds' END,
       CASE WHEN st = 'running' THEN 'bench-worker' END,
       CASE WHEN st = 'running' THEN i END,
       CASE WHEN st = 'running' THEN now() + interval '1 minute' END,
       'schedule:trade-cycle'
FROM kinds, generate_series(1, 1000000) AS i,
LATERAL (SELECT now() - interval '7 days' * (1000000 - i) / 1000000.0 AS t) tt,
LATERAL (SELECT CASE
   WHEN i > 999000 THEN (CASE WHEN i % 10 = 0 THEN 'running' ELSE 'available' END)
   WHEN i % 25 = 0 THEN 'discarded'
   WHEN i % 97 = 0 THEN 'cancelled'
   ELSE 'completed' END AS st) s;
VACUUM ANALYZE jobs;
SELECT state, count(*) FROM jobs GROUP BY 1 ORDER BY 1;
