-- Schedules (SPEC A2) and workflow runs (SPEC A3), built on the job tables.
-- As in 0001, time always comes from the caller's Clock, never from now().

-- Workflow runs. The definition is snapshotted at start, so a run (and its retry) follows
-- the DAG it started with even when the file changes under it.
CREATE TABLE workflow_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow     text        NOT NULL,
    state        text        NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    args         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    definition   jsonb       NOT NULL,
    -- who or what started it: "schedule:NAME", "cli:USER", "dashboard:USER" …
    triggered_by text        NOT NULL,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    CHECK ((state = 'running') = (finished_at IS NULL))
);
CREATE INDEX workflow_runs_recent_idx ON workflow_runs (workflow, created_at DESC);
CREATE INDEX workflow_runs_finished_idx ON workflow_runs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per step of a run. `job_id` is the step's current job (a retry points it at the
-- new copy); `note` says why a step was skipped or how its condition was evaluated.
CREATE TABLE workflow_steps (
    run_id     bigint      NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step       text        NOT NULL,
    kind       text        NOT NULL,
    state      text        NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'enqueued', 'completed', 'skipped', 'failed', 'cancelled')),
    job_id     bigint,
    output     jsonb,
    note       text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, step),
    CHECK ((state = 'enqueued') <= (job_id IS NOT NULL))
);
CREATE INDEX workflow_steps_job_idx ON workflow_steps (job_id) WHERE job_id IS NOT NULL;

-- Schedules as loaded from jobs/*.toml, with the state that must survive restarts.
-- `next_fire_at` is the oldest fire time not yet produced: the compare-and-set key of the
-- leaderless scheduler (a fire moves it forward in the transaction that enqueues).
CREATE TABLE schedules (
    name             text PRIMARY KEY,
    cron             text        NOT NULL,
    timezone         text        NOT NULL,
    target_type      text        NOT NULL CHECK (target_type IN ('job', 'workflow')),
    target           text        NOT NULL,
    args             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    queue            text,
    priority         smallint    NOT NULL DEFAULT 0,
    catch_up         text        NOT NULL CHECK (catch_up IN ('none', 'latest', 'all')),
    max_catch_up     integer     NOT NULL CHECK (max_catch_up > 0),
    misfire_grace_ms bigint      NOT NULL CHECK (misfire_grace_ms >= 0),
    -- from the file; a runtime pause (`paused`) wins over it and outlives restarts
    enabled          boolean     NOT NULL,
    paused           boolean     NOT NULL DEFAULT false,
    -- set by `schedules sync --prune` when no file holds the schedule any more
    pruned           boolean     NOT NULL DEFAULT false,
    source           text        NOT NULL,
    next_fire_at     timestamptz NOT NULL,
    last_fire_at     timestamptz,
    missed_total     bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled AND NOT paused AND NOT pruned;

-- Every fire: the job or run it produced. A cron fire time is unique per schedule (the
-- last line of defence behind the compare-and-set); manual triggers are recorded as such.
CREATE TABLE schedule_fires (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule     text        NOT NULL,
    fire_time    timestamptz NOT NULL,
    trigger      text        NOT NULL CHECK (trigger IN ('cron', 'catch_up', 'manual')),
    triggered_by text        NOT NULL,
    job_id       bigint,
    run_id       bigint,
    created_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX schedule_fires_once_idx ON schedule_fires (schedule, fire_time)
    WHERE trigger <> 'manual';
CREATE INDEX schedule_fires_recent_idx ON schedule_fires (schedule, id DESC);
