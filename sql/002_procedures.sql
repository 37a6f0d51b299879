-- zodan 1.0.0's procedures: add_node, remove_node, health_check and their
-- helpers, exactly as released (the code package sql/snapshots/1.0.0,
-- evaluated for the node), plus the manifest of what they are so that an
-- upgrade replaces exactly them and uninstall drops exactly them.
SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL spock.enable_ddl_replication = off;

CREATE TABLE {{.schema}}.zodan_install (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    zodan_version text NOT NULL,
    code_sha256 text NOT NULL,
    dblink_created boolean NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    installed_by text NOT NULL DEFAULT current_user
);

CREATE TABLE {{.schema}}.zodan_code_object (
    signature text PRIMARY KEY,
    definition_md5 text NOT NULL
);

COMMENT ON TABLE {{.schema}}.zodan_code_object IS
    'zodan: the routines zodan installed here, with a checksum of each definition as installed';

REVOKE ALL ON {{.schema}}.zodan_install, {{.schema}}.zodan_code_object FROM PUBLIC;

INSERT INTO {{.schema}}.zodan_install (zodan_version, code_sha256, dblink_created)
SELECT {{ (index .releases "1.0.0").version_literal }}, '', {{ if .create_dblink }}NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink'){{ else }}false{{ end }};
{{ if .create_dblink }}
CREATE EXTENSION IF NOT EXISTS dblink SCHEMA {{.dblink_schema}};
{{ end }}
{{ template "shared/install_code.sql" (index .releases "1.0.0") }}

---- create above / drop below ----

SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL spock.enable_ddl_replication = off;
{{ template "shared/drop_code.sql" . }}
DO $zodan$
BEGIN
    IF (SELECT dblink_created FROM {{.schema}}.zodan_install)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.refclassid = 'pg_extension'::regclass
                          AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dblink')
                          AND d.deptype = 'n') THEN
        DROP EXTENSION IF EXISTS dblink;
    END IF;
END
$zodan$;
DROP TABLE {{.schema}}.zodan_code_object;
DROP TABLE {{.schema}}.zodan_install;
