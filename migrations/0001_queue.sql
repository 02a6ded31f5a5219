-- The job framework's tables (SPEC A1). Knows nothing about trading.
--
-- Time is never taken from now(): every statement gets "now" from the caller's Clock,
-- so tests can drive leases, backoff and schedules with a manual clock.

CREATE TYPE job_state AS ENUM ('available', 'running', 'completed', 'discarded', 'cancelled');

-- Lease tokens: a fresh value at every claim, so a late completion from a worker that
-- lost its lease cannot touch the job's next attempt (compared on every state change).
CREATE SEQUENCE job_lease_token_seq AS bigint CACHE 1000;

CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind <> ''),
    queue            text        NOT NULL CHECK (queue <> ''),
    args             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer     NOT NULL DEFAULT 20 CHECK (max_attempts > 0),
    state            job_state   NOT NULL DEFAULT 'available',
    timeout_ms       integer     CHECK (timeout_ms > 0),
    unique_key       text,
    -- One entry per failed attempt: {attempt, at, message, chain: [..]}.
    errors           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    output           jsonb,
    workflow_run_id  bigint,
    workflow_step    text,
    -- "run again" of a final job enqueues a copy that links to the original.
    copied_from      bigint,
    -- who or what enqueued it: "cli", "schedule:NAME", "dashboard:USER", "job:ID" …
    enqueued_by      text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    worker           text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim path: only available rows are indexed, in claim order, so the index stays
-- small however many finished jobs the table holds.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority, run_at, id) WHERE state = 'available';

-- The rescuer scans running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- Pruning and the dashboard's "finished" views.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE state IN ('completed', 'discarded', 'cancelled');

-- Unique among non-final jobs: a duplicate enqueue finds the live job.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running');

CREATE INDEX jobs_workflow_idx ON jobs (workflow_run_id) WHERE workflow_run_id IS NOT NULL;

-- Queue-level switches. A queue with no row is active.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);

-- Workers announce themselves; the dashboard shows who is alive.
CREATE TABLE workers (
    name         text PRIMARY KEY,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
