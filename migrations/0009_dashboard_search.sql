-- The dashboard's kind filter (web::job_search, WINDOW_OF_KIND): the newest jobs of one
-- kind below a cursor, read backwards from this index, so a kind that matches nothing (or
-- a few old jobs) answers at once instead of walking the primary key over the whole table.
-- Its cost falls on the queue: every enqueue and every state change of a job (a non-HOT
-- update, the partial indexes reference `state`) inserts one entry here too; measured in
-- docs/BENCHMARKS.md ("Dashboard"). Built inside the migration's transaction: the build
-- holds a SHARE lock on jobs (enqueue and claim wait), about a second per million rows.
CREATE INDEX jobs_kind_id_idx ON jobs (kind, id);
