{{- /*
  Replaces the installed routines with one release's code: drops every
  routine the manifest lists, creates the new ones, and records them (with a
  checksum of each definition) in the manifest, and the release and its
  checksum in zodan_install. Used by the migrations that install a release,
  and by "zodan-install install" to repair drifted code. Runs inside the
  caller's transaction, so a failure leaves the previous code in place.

  Its data is one entry of .releases: schema, schema_literal, version,
  version_literal, code, code_sha256_literal, and skip_code, set in the
  psql script, which installs only the newest release's code, once, at its
  end.
*/ -}}
{{ if .skip_code -}}
-- (zodan {{.version}}'s procedures: the script installs the newest release's once, at its end)
{{- else -}}
{{ template "shared/drop_code.sql" . }}

DO $zodan$
BEGIN
    -- Some routines are SQL functions that call dblink's: where dblink is
    -- not installed yet (the psql script leaves it to the DBA), they can
    -- only be checked when they run, as the script does.
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink') THEN
        PERFORM set_config('check_function_bodies', 'off', true);
    END IF;
END
$zodan$;

CREATE TEMP TABLE zodan_routines_before AS
    SELECT p.oid FROM pg_proc p WHERE p.pronamespace = {{.schema_literal}}::regnamespace;

{{.code}}

INSERT INTO {{.schema}}.zodan_code_object (signature, definition_md5)
SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
  FROM pg_proc p
 WHERE p.pronamespace = {{.schema_literal}}::regnamespace
   AND p.oid NOT IN (SELECT oid FROM zodan_routines_before);

DO $zodan$
DECLARE
    r record;
BEGIN
    -- Only superusers (and whom a DBA grants it to) may run these: they
    -- drive every node of the cluster.
    FOR r IN SELECT signature FROM {{.schema}}.zodan_code_object LOOP
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', r.signature);
    END LOOP;
END
$zodan$;

DROP TABLE zodan_routines_before;

UPDATE {{.schema}}.zodan_install
   SET zodan_version = {{.version_literal}}, code_sha256 = {{.code_sha256_literal}},
       installed_at = now(), installed_by = current_user;
{{- end }}
