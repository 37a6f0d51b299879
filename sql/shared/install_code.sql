{{- /*
  Replaces the installed routines with the rendered code: drops every routine the
  manifest lists, creates the new ones, and records them (with a checksum of
  each definition) in the manifest. Used by the procedures migration and by
  "zodan-install install" to repair drifted code. Runs inside the caller's
  transaction, so a failure leaves the previous code in place.
*/ -}}
{{ template "shared/drop_code.sql" . }}

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
