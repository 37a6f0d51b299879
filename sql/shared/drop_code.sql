{{- /* Drops every routine the manifest lists: the procedures this zodan
       installed, and nothing else in the shared schema. */ -}}
DO $zodan$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT signature FROM {{.schema}}.zodan_code_object LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s', r.signature);
    END LOOP;
    DELETE FROM {{.schema}}.zodan_code_object;
END
$zodan$;
