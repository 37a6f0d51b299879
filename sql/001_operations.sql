-- The operation journal: one row per add_node/remove_node, one row per
-- phase, and the view DBAs read it through. Written by the procedures
-- through their own connection to this node, so it shows progress while an
-- operation runs and keeps its outcome afterwards.
SET LOCAL search_path = pg_catalog, pg_temp;
-- Nothing zodan installs is replicated: each node has its own journal.
SET LOCAL spock.enable_ddl_replication = off;

CREATE TABLE {{.schema}}.zodan_operation (
    op_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('add_node', 'remove_node')),
    node_name text NOT NULL,
    source_node text,
    coordinator_pid integer NOT NULL,
    coordinator_started timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    phase text,
    phase_started_at timestamptz,
    last_message text,
    last_message_at timestamptz,
    error text,
    cleanup text,
    details jsonb NOT NULL DEFAULT '{}'
);

COMMENT ON TABLE {{.schema}}.zodan_operation IS
    'zodan: add_node and remove_node operations run on this node; read it through zodan_operations';

CREATE TABLE {{.schema}}.zodan_operation_phase (
    op_id bigint NOT NULL REFERENCES {{.schema}}.zodan_operation ON DELETE CASCADE,
    phase_no integer NOT NULL,
    phase text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    outcome text CHECK (outcome IN ('done', 'skipped', 'failed')),
    PRIMARY KEY (op_id, phase_no)
);

-- An operation whose coordinating session is gone while it is recorded as
-- running was interrupted (crash, killed session, restart); the next
-- add_node of the same node cleans up after it.
CREATE VIEW {{.schema}}.zodan_operations AS
SELECT o.op_id,
       o.kind,
       o.node_name AS node,
       o.source_node,
       CASE WHEN o.state = 'running'
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                                  WHERE a.pid = o.coordinator_pid
                                    AND (a.backend_start IS NULL OR a.backend_start = o.coordinator_started))
            THEN 'interrupted' ELSE o.state END AS state,
       o.phase AS current_phase,
       o.phase_started_at,
       o.started_at,
       o.finished_at,
       coalesce(o.finished_at,
                CASE WHEN o.state = 'running' THEN pg_catalog.clock_timestamp() END,
                o.last_message_at, o.started_at) - o.started_at AS elapsed,
       o.last_message,
       o.last_message_at,
       o.error,
       o.cleanup,
       (SELECT pg_catalog.string_agg(
                   pg_catalog.format('%s %s', p.phase,
                       CASE WHEN p.finished_at IS NULL THEN 'running'
                            ELSE pg_catalog.to_char(EXTRACT(epoch FROM p.finished_at - p.started_at), 'FM999999990.00')
                                 || ' s' || CASE WHEN p.outcome = 'done' THEN '' ELSE ' ' || p.outcome END END),
                   ', ' ORDER BY p.phase_no)
          FROM {{.schema}}.zodan_operation_phase p WHERE p.op_id = o.op_id) AS phase_durations,
       (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'phase_no', p.phase_no, 'phase', p.phase, 'started_at', p.started_at,
                   'finished_at', p.finished_at, 'outcome', p.outcome,
                   'seconds', EXTRACT(epoch FROM p.finished_at - p.started_at)) ORDER BY p.phase_no)
          FROM {{.schema}}.zodan_operation_phase p WHERE p.op_id = o.op_id) AS phases
  FROM {{.schema}}.zodan_operation o;

COMMENT ON VIEW {{.schema}}.zodan_operations IS
    'zodan: the running add_node/remove_node (state running) and the history of past ones, with per-phase durations';

REVOKE ALL ON {{.schema}}.zodan_operation, {{.schema}}.zodan_operation_phase, {{.schema}}.zodan_operations FROM PUBLIC;

---- create above / drop below ----

SET LOCAL spock.enable_ddl_replication = off;
DROP VIEW {{.schema}}.zodan_operations;
DROP TABLE {{.schema}}.zodan_operation_phase;
DROP TABLE {{.schema}}.zodan_operation;
