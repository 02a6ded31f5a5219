-- Every run of the built-in `probe` kind (a canary): which worker ran which attempt.
-- The fault suite reads it to prove no (job, attempt) ran twice.
CREATE TABLE probe_runs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    worker     text        NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX probe_runs_job_idx ON probe_runs (job_id, attempt);
