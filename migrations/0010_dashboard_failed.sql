-- The dashboard's state filter for the states people look for (web::job_search): the
-- newest discarded or cancelled jobs below a cursor, read backwards from this index, so
-- `state=discarded` fills its page from ~50 index entries however rare such jobs are,
-- and its search window holds only them. Partial: a job that completes (the queue's
-- common path) is never entered, PostgreSQL only evaluates the predicate on each new row
-- version, so the queue does not pay for it; only a discard or cancel adds an entry.
-- Built inside the migration's transaction: a SHARE lock on jobs while it reads the table
-- (enqueue and claim wait), under a second per million rows.
CREATE INDEX jobs_failed_id_idx ON jobs (state, id) WHERE state IN ('discarded', 'cancelled');
