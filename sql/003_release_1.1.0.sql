-- zodan 1.1.0's procedures (sql/snapshots/1.1.0) replace 1.0.0's: the
-- routines the manifest lists are dropped, the new ones created and
-- recorded. Down puts back exactly 1.0.0's. The operation journal is
-- untouched both ways.
SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL spock.enable_ddl_replication = off;
{{ template "shared/install_code.sql" (index .releases "1.1.0") }}

---- create above / drop below ----

SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL spock.enable_ddl_replication = off;
{{ template "shared/install_code.sql" (index .releases "1.0.0") }}
