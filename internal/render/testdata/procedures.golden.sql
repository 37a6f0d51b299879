-- ===========================================================================
-- zodan 1.1.0: add_node, remove_node and health_check for pgEdge Spock
-- clusters, with their helpers, in schema zodan_ci.
--
-- Rendered for PostgreSQL 17, Spock 5.0.9 or later
-- (progress column remote_commit_lsn; slots get failover where the
-- provider runs PostgreSQL 17+, as Spock creates them),
-- dblink in schema ext, default sync timeout 90 s.
--
-- Do not edit: generated from templates/*.sql.tmpl.
-- ===========================================================================
-- ---------------------------------------------------------------------------
-- Connection strings.
--
-- DSNs reach these procedures as text and often carry a password. Nothing
-- here ever echoes a DSN as given: messages show zodan_dsn_display(), which
-- is rebuilt from a real parse and leaves secrets out. The parser follows
-- libpq's rules for both forms (keyword/value with quoting and backslash
-- escapes, and postgresql:// URIs with percent-encoding), because a regex
-- over the raw text gets "dbname = 'my db'" and URIs wrong.
-- ---------------------------------------------------------------------------

-- Percent-decoding as libpq does it, spaces around the value trimmed. It
-- works on bytes (%C3%A9 is one character); a result that is not UTF-8 is
-- returned undecoded rather than refused, as zodan only reads DSNs to
-- mask them and to find a database name, never to connect with them.
CREATE FUNCTION zodan_ci.zodan_uri_decode(s text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bytes bytea := ''::bytea;
    i int := 1;
    n int;
    c text;
BEGIN
    s := btrim(s, ' ');
    IF position('%' IN s) = 0 THEN
        RETURN s;
    END IF;
    n := length(s);
    WHILE i <= n LOOP
        c := substr(s, i, 1);
        IF c = '%' THEN
            IF substr(s, i + 1, 2) !~ '^[0-9A-Fa-f]{2}$' THEN
                RAISE EXCEPTION 'invalid connection URI: bad percent-encoding'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF substr(s, i + 1, 2) = '00' THEN
                RAISE EXCEPTION 'invalid connection URI: forbidden value %%00 in percent-encoding'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            bytes := bytes || decode(substr(s, i + 1, 2), 'hex');
            i := i + 3;
        ELSE
            bytes := bytes || convert_to(c, 'UTF8');
            i := i + 1;
        END IF;
    END LOOP;
    BEGIN
        RETURN convert_from(bytes, 'UTF8');
    EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
        RETURN s;
    END;
END;
$fn$;

-- Length of the URI scheme dsn starts with ("postgresql://" or
-- "postgres://", compared case-sensitively as libpq does), or 0.
CREATE FUNCTION zodan_ci.zodan_uri_prefix_length(dsn text)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN starts_with(dsn, 'postgresql://') THEN 13
                WHEN starts_with(dsn, 'postgres://') THEN 11
                ELSE 0 END;
$fn$;

-- Reads one keyword/value value starting at position i of s, by libpq's
-- rules: a quoted value runs to the next unescaped quote, an unquoted one
-- to the next white space; a backslash makes the next character literal.
-- Returns the value and the position after it; an unterminated quote
-- returns value NULL and the end of s.
CREATE FUNCTION zodan_ci.zodan_scan_value(s text, i integer, OUT value text, OUT next integer)
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n int := length(s);
    c text;
BEGIN
    value := '';
    IF substr(s, i, 1) = '''' THEN
        i := i + 1;
        LOOP
            IF i > n THEN
                value := NULL;
                next := n + 1;
                RETURN;
            END IF;
            c := substr(s, i, 1);
            IF c = '\' THEN
                IF i = n THEN
                    -- A trailing backslash escapes the end: unterminated.
                    value := NULL;
                    next := n + 1;
                    RETURN;
                END IF;
                value := value || substr(s, i + 1, 1);
                i := i + 2;
            ELSIF c = '''' THEN
                next := i + 1;
                RETURN;
            ELSE
                value := value || c;
                i := i + 1;
            END IF;
        END LOOP;
    END IF;
    WHILE i <= n AND substr(s, i, 1) NOT IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP
        c := substr(s, i, 1);
        IF c = '\' THEN
            value := value || substr(s, i + 1, 1);
            i := i + 2;
        ELSE
            value := value || c;
            i := i + 1;
        END IF;
    END LOOP;
    next := least(i, n + 1);
END;
$fn$;

-- Parses a libpq connection string into its settings, in order; a later
-- keyword overrides an earlier one, as in libpq. value_start and
-- value_end delimit each value as written (1-based, end exclusive), so
-- that zodan_redact can replace exactly a secret and nothing else. The
-- rules are libpq's, and the same as the Go package internal/dsn, which
-- is fuzzed against pgx's parser; a test holds the two equal.
CREATE FUNCTION zodan_ci.zodan_conninfo(dsn text)
RETURNS TABLE (keyword text, value text, value_start integer, value_end integer)
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n int := length(dsn);
    p int;
    e int;
    colon int;
    userinfo text;
    hosts text := '';
    ports text := '';
    host_start int;
    port_start int;
    pair text;
    rk text;
    rv text;
    k text;
    scanned record;
BEGIN
    IF zodan_ci.zodan_uri_prefix_length(dsn) > 0 THEN
        p := zodan_ci.zodan_uri_prefix_length(dsn) + 1;
        -- [user[:password]@]: up to the first '@' that comes before any '/'.
        e := p;
        WHILE e <= n AND substr(dsn, e, 1) NOT IN ('@', '/') LOOP e := e + 1; END LOOP;
        IF e <= n AND substr(dsn, e, 1) = '@' THEN
            userinfo := substr(dsn, p, e - p);
            colon := position(':' IN userinfo);
            IF colon = 0 THEN
                colon := length(userinfo) + 1;
            END IF;
            IF colon > 1 THEN
                keyword := 'user'; value := zodan_ci.zodan_uri_decode(substr(userinfo, 1, colon - 1));
                value_start := p; value_end := p + colon - 1;
                RETURN NEXT;
            END IF;
            IF colon < length(userinfo) THEN
                keyword := 'password'; value := zodan_ci.zodan_uri_decode(substr(userinfo, colon + 1));
                value_start := p + colon; value_end := e;
                RETURN NEXT;
            END IF;
            p := e + 1;
        END IF;
        -- host[:port][,...], IPv6 addresses in brackets
        host_start := p;
        LOOP
            IF substr(dsn, p, 1) = '[' THEN
                e := position(']' IN substr(dsn, p));
                IF e = 0 THEN
                    RAISE EXCEPTION 'invalid connection URI: no "]" after an IPv6 address'
                        USING ERRCODE = 'invalid_parameter_value';
                ELSIF e = 2 THEN
                    RAISE EXCEPTION 'invalid connection URI: empty IPv6 host address'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                hosts := hosts || substr(dsn, p + 1, e - 2);
                p := p + e;
                IF p <= n AND substr(dsn, p, 1) NOT IN (':', '/', '?', ',') THEN
                    RAISE EXCEPTION 'invalid connection URI: unexpected character after an IPv6 address'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            ELSE
                e := p;
                WHILE e <= n AND substr(dsn, e, 1) NOT IN (':', '/', '?', ',') LOOP e := e + 1; END LOOP;
                hosts := hosts || substr(dsn, p, e - p);
                p := e;
            END IF;
            IF substr(dsn, p, 1) = ':' THEN
                p := p + 1;
                port_start := coalesce(port_start, p);
                e := p;
                WHILE e <= n AND substr(dsn, e, 1) NOT IN ('/', '?', ',') LOOP e := e + 1; END LOOP;
                ports := ports || substr(dsn, p, e - p);
                p := e;
            END IF;
            EXIT WHEN p > n OR substr(dsn, p, 1) <> ',';
            p := p + 1;
            hosts := hosts || ',';
            ports := ports || ',';
        END LOOP;
        IF hosts <> '' THEN
            keyword := 'host'; value := zodan_ci.zodan_uri_decode(hosts);
            value_start := host_start; value_end := p;
            RETURN NEXT;
        END IF;
        IF ports <> '' THEN
            keyword := 'port'; value := zodan_ci.zodan_uri_decode(ports);
            value_start := port_start; value_end := p;
            RETURN NEXT;
        END IF;
        -- [/dbname]
        IF substr(dsn, p, 1) = '/' THEN
            p := p + 1;
            e := p;
            WHILE e <= n AND substr(dsn, e, 1) <> '?' LOOP e := e + 1; END LOOP;
            IF e > p THEN
                keyword := 'dbname'; value := zodan_ci.zodan_uri_decode(substr(dsn, p, e - p));
                value_start := p; value_end := e;
                RETURN NEXT;
            END IF;
            p := e;
        END IF;
        -- [?keyword=value[&...]]
        IF substr(dsn, p, 1) = '?' THEN
            p := p + 1;
            WHILE p <= n LOOP
                e := p;
                WHILE e <= n AND substr(dsn, e, 1) <> '&' LOOP e := e + 1; END LOOP;
                pair := substr(dsn, p, e - p);
                IF position('=' IN pair) = 0 THEN
                    RAISE EXCEPTION 'invalid connection URI: parameter without "="'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                rk := substr(pair, 1, position('=' IN pair) - 1);
                rv := substr(pair, position('=' IN pair) + 1);
                IF position('=' IN rv) > 0 THEN
                    RAISE EXCEPTION 'invalid connection URI: parameter with a second "="'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                keyword := zodan_ci.zodan_uri_decode(rk);
                value_start := p + length(rk) + 1; value_end := e;
                IF keyword = 'ssl' AND rv = 'true' THEN
                    keyword := 'sslmode'; value := 'require';
                ELSE
                    value := zodan_ci.zodan_uri_decode(rv);
                END IF;
                RETURN NEXT;
                p := e + 1;
            END LOOP;
        END IF;
        RETURN;
    END IF;

    -- keyword = value pairs, as libpq's conninfo_parse reads them.
    p := 1;
    LOOP
        WHILE p <= n AND substr(dsn, p, 1) IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP p := p + 1; END LOOP;
        EXIT WHEN p > n;
        e := p;
        WHILE e <= n AND substr(dsn, e, 1) NOT IN ('=', ' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP e := e + 1; END LOOP;
        k := substr(dsn, p, e - p);
        p := e;
        WHILE p <= n AND substr(dsn, p, 1) IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP p := p + 1; END LOOP;
        IF p > n OR substr(dsn, p, 1) <> '=' THEN
            RAISE EXCEPTION 'invalid connection string: missing "=" after "%"', left(k, 40)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        p := p + 1;
        WHILE p <= n AND substr(dsn, p, 1) IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP p := p + 1; END LOOP;
        scanned := zodan_ci.zodan_scan_value(dsn, p);
        IF scanned.value IS NULL THEN
            -- The value may be a password: name only the keyword.
            RAISE EXCEPTION 'invalid connection string: unterminated quoted value for "%"', left(k, 40)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        keyword := k; value := scanned.value; value_start := p; value_end := scanned.next;
        RETURN NEXT;
        p := scanned.next;
    END LOOP;
END;
$fn$;

COMMENT ON FUNCTION zodan_ci.zodan_conninfo(text) IS
    'zodan: parses a libpq connection string (keyword/value or URI) into its settings, in order, with where each value is written; later keywords override earlier ones, as in libpq';

-- The value libpq would use for keyword: the last occurrence wins.
--
-- Functions that take a DSN are PL/pgSQL, never LANGUAGE sql: auto_explain
-- (PostgreSQL 16+) logs the parameter values of statements run inside SQL
-- functions, and a DSN is a parameter here.
CREATE FUNCTION zodan_ci.zodan_dsn_get(dsn text, key text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    found text;
    r record;
BEGIN
    FOR r IN SELECT keyword, value FROM zodan_ci.zodan_conninfo(dsn) LOOP
        IF r.keyword = key THEN
            found := r.value;
        END IF;
    END LOOP;
    RETURN found;
END;
$fn$;

-- The database a DSN names, or NULL when it leaves that to libpq's defaults.
CREATE FUNCTION zodan_ci.zodan_dsn_dbname(dsn text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN zodan_ci.zodan_dsn_get(dsn, 'dbname');
END;
$fn$;

-- A DSN that is safe to print: host, hostaddr, port, dbname, user and
-- service only (the last of each wins), each passed through zodan_redact
-- in case it quotes another DSN. Same output as Go's dsn.Display.
CREATE FUNCTION zodan_ci.zodan_dsn_display(dsn text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    shown text[] := '{}'::text[];
    k text;
    v text;
BEGIN
    IF dsn IS NULL THEN
        RETURN '(no DSN)';
    END IF;
    FOREACH k IN ARRAY ARRAY['host', 'hostaddr', 'port', 'dbname', 'user', 'service'] LOOP
        v := zodan_ci.zodan_dsn_get(dsn, k);
        IF v <> '' THEN
            shown := shown || format('%s=%s', k, zodan_ci.zodan_redact(v));
        END IF;
    END LOOP;
    IF cardinality(shown) = 0 THEN
        RETURN '(DSN with defaults only)';
    END IF;
    RETURN array_to_string(shown, ' ');
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN '(unparsable DSN)';
END;
$fn$;

-- dsn as keyword/value pairs, each value quoted: a URI becomes the same
-- settings in the form that can be extended by appending.
CREATE FUNCTION zodan_ci.zodan_dsn_keywords(dsn text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    parts text[] := '{}'::text[];
    r record;
BEGIN
    IF zodan_ci.zodan_uri_prefix_length(dsn) = 0 THEN
        RETURN dsn;
    END IF;
    FOR r IN SELECT keyword, value FROM zodan_ci.zodan_conninfo(dsn) LOOP
        parts := parts || format('%s=%s', r.keyword, zodan_ci.zodan_quote_value(r.value));
    END LOOP;
    RETURN array_to_string(parts, ' ');
END;
$fn$;

-- A value quoted for a keyword/value connection string.
CREATE FUNCTION zodan_ci.zodan_quote_value(v text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN '''' || replace(replace(v, '\', '\\'), '''', '\''') || '''';
END;
$fn$;

-- dsn with keyword=value added unless the DSN already sets that keyword.
-- Used to bound connection attempts (connect_timeout) without overriding
-- what the DBA chose. A URI is rewritten as keyword/value pairs first:
-- appending to it would need to know where its query part starts, and a
-- '?' may also stand in its password.
CREATE FUNCTION zodan_ci.zodan_dsn_with_default(dsn text, key text, val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF zodan_ci.zodan_dsn_get(dsn, key) IS NOT NULL THEN
        RETURN dsn;
    END IF;
    RETURN zodan_ci.zodan_dsn_keywords(dsn) || format(' %s=%s', key, zodan_ci.zodan_quote_value(val));
END;
$fn$;

-- Whether a value may quote a secret (a DSN inside another setting).
CREATE FUNCTION zodan_ci.zodan_may_quote_secret(v text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    v := translate(v, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
    RETURN position('password' IN v) > 0 OR position('secret' IN v) > 0 OR position('://' IN v) > 0;
END;
$fn$;

-- Every byte but the unreserved ones (RFC 3986) percent-encoded.
CREATE FUNCTION zodan_ci.zodan_percent_encode(v text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    b bytea := convert_to(v, 'UTF8');
    out text := '';
    c int;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        c := get_byte(b, i);
        IF chr(c) ~ '^[A-Za-z0-9._~-]$' AND c < 128 THEN
            out := out || chr(c);
        ELSE
            out := out || '%' || upper(lpad(to_hex(c), 2, '0'));
        END IF;
    END LOOP;
    RETURN out;
END;
$fn$;

-- Secrets in prose: every "password = value" (sslpassword and
-- oauth_client_secret too, any case, value read by libpq's rules; in a
-- URI query it ends at '&') and every "postgresql://user:secret@".
CREATE FUNCTION zodan_ci.zodan_redact_fragments(msg text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n int := length(msg);
    out text := '';
    i int := 1;
    j int;
    k int;
    colon int;
    kw text;
    prev text;
    scanned record;
    matched boolean;
BEGIN
    WHILE i <= n LOOP
        prev := CASE WHEN i > 1 THEN substr(msg, i - 1, 1) ELSE '' END;
        -- scheme://user:secret@ ; the user information ends at the first
        -- '@' before any '/', and a line break ends the search in prose.
        IF zodan_ci.zodan_uri_prefix_length(substr(msg, i, 13)) > 0 AND prev !~ '^[A-Za-z0-9_]$' THEN
            j := i + zodan_ci.zodan_uri_prefix_length(substr(msg, i, 13));
            k := j;
            WHILE k <= n AND substr(msg, k, 1) NOT IN ('@', '/', E'\n') LOOP k := k + 1; END LOOP;
            IF k <= n AND substr(msg, k, 1) = '@' THEN
                colon := position(':' IN substr(msg, j, k - j));
                IF colon > 0 AND j + colon < k THEN
                    out := out || substr(msg, i, j + colon - i) || '********@';
                    i := k + 1;
                    CONTINUE;
                END IF;
            END IF;
            out := out || substr(msg, i, j - i);
            i := j;
            CONTINUE;
        END IF;
        -- password = value
        matched := false;
        IF prev !~ '^[A-Za-z0-9_]$' THEN
            FOREACH kw IN ARRAY ARRAY['oauth_client_secret', 'sslpassword', 'password'] LOOP
                IF translate(substr(msg, i, length(kw)), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') = kw
                   AND substr(msg, i + length(kw), 1) !~ '^[A-Za-z0-9_]$' THEN
                    matched := true;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        IF matched THEN
            j := i + length(kw);
            WHILE j <= n AND substr(msg, j, 1) IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP j := j + 1; END LOOP;
            IF substr(msg, j, 1) = '=' THEN
                j := j + 1;
                WHILE j <= n AND substr(msg, j, 1) IN (' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP j := j + 1; END LOOP;
                IF prev IN ('?', '&') THEN
                    k := j;
                    WHILE k <= n AND substr(msg, k, 1) NOT IN ('&', ' ', E'\t', E'\n', E'\x0b', E'\f', E'\r') LOOP k := k + 1; END LOOP;
                ELSE
                    scanned := zodan_ci.zodan_scan_value(msg, j);
                    k := scanned.next;
                END IF;
                -- Already masked (perhaps before the quote that closes
                -- the prose around it): masking again would eat that quote.
                IF substr(msg, j, k - j) IN ('********', '********''', '********"', '''********''') THEN
                    out := out || substr(msg, i, k - i);
                    i := k;
                    CONTINUE;
                END IF;
                IF k > j THEN
                    out := out || substr(msg, i, j - i) || '********';
                    i := k;
                    CONTINUE;
                END IF;
            END IF;
            out := out || substr(msg, i, j - i);
            i := j;
            CONTINUE;
        END IF;
        out := out || substr(msg, i, 1);
        i := i + 1;
    END LOOP;
    RETURN out;
END;
$fn$;

-- Hides secrets in any text: a whole connection string, or a message
-- that may quote one (a remote error, a libpq detail, Spock's "dsn was:").
-- A text that parses as a connection string is masked exactly: the
-- values of password, sslpassword and oauth_client_secret, where
-- zodan_conninfo says they are written, become ******** and nothing else
-- changes. Other text goes through zodan_redact_fragments. The Go
-- function dsn.Mask is the same algorithm; a test holds them equal.
CREATE FUNCTION zodan_ci.zodan_redact(msg text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    uri boolean;
    out text := '';
    at int := 1;
    inner_value text;
    r record;
BEGIN
    IF msg IS NULL THEN
        RETURN NULL;
    END IF;
    uri := zodan_ci.zodan_uri_prefix_length(msg) > 0;
    IF NOT uri AND position('=' IN msg) = 0 THEN
        RETURN zodan_ci.zodan_redact_fragments(msg);
    END IF;
    BEGIN
        FOR r IN SELECT c.keyword, c.value, c.value_start, c.value_end
                   FROM zodan_ci.zodan_conninfo(msg) AS c
                  ORDER BY c.value_start LOOP
            CONTINUE WHEN r.value = '' OR r.value_end <= r.value_start OR r.value_start < at;
            IF lower(r.keyword) IN ('password', 'sslpassword', 'oauth_client_secret') THEN
                out := out || substr(msg, at, r.value_start - at)
                           || CASE WHEN NOT uri AND substr(msg, r.value_start, 1) = '''' THEN '''********''' ELSE '********' END;
                at := r.value_end;
            ELSIF r.keyword NOT IN ('host', 'port') AND zodan_ci.zodan_may_quote_secret(r.value) THEN
                -- Another setting quoting a whole DSN loses its secrets
                -- too, and is written back so that the string still parses.
                inner_value := zodan_ci.zodan_redact(r.value);
                CONTINUE WHEN inner_value = r.value;
                out := out || substr(msg, at, r.value_start - at)
                           || CASE WHEN uri THEN zodan_ci.zodan_percent_encode(inner_value)
                                   ELSE zodan_ci.zodan_quote_value(inner_value) END;
                at := r.value_end;
            END IF;
        END LOOP;
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN zodan_ci.zodan_redact_fragments(msg);
    END;
    RETURN out || substr(msg, at);
END;
$fn$;

-- ---------------------------------------------------------------------------
-- Talking to nodes.
--
-- Every statement zodan runs on a node, the local one included, goes
-- through a named dblink connection "zodan/<node name>" opened by
-- zodan_connect. Three reasons:
--   * each remote statement commits on its own, so a failure here never
--     rolls back half of what a node did, and cleanup knows what exists;
--   * the procedure's own transaction writes nothing, so it never holds an
--     xid: logical slot creation on this node (by a peer subscribing to it)
--     waits for every transaction holding one, and would wait for us;
--   * errors are re-raised naming the node, never the DSN.
-- The helpers below are the only callers of dblink.
-- ---------------------------------------------------------------------------

-- Seconds that one wait may go without progress: the argument if given,
-- else the spock.sync_timeout setting (seconds, or any interval such as
-- '2h'), else 90.
CREATE FUNCTION zodan_ci.zodan_sync_timeout(requested interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    setting text := nullif(btrim(current_setting('spock.sync_timeout', true)), '');
    secs numeric;
BEGIN
    IF requested IS NOT NULL THEN
        secs := extract(epoch FROM requested);
        IF secs <= 0 THEN
            RAISE EXCEPTION 'sync_timeout must be positive, got %', requested
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN ceil(secs)::integer;
    END IF;
    IF setting IS NOT NULL AND setting <> '0' THEN
        BEGIN
            IF setting ~ '^\d+$' THEN
                secs := setting::numeric;
            ELSE
                secs := extract(epoch FROM setting::interval);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'spock.sync_timeout is set to "%", which is neither seconds nor an interval', setting
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use e.g. SET spock.sync_timeout = ''1800'' or ''30min''.';
        END;
        IF secs > 0 THEN
            RETURN ceil(secs)::integer;
        END IF;
    END IF;
    RETURN 90;
END;
$fn$;

-- The settings under which every zodan session runs, the DBA's own CALL
-- included: statements, their parameters and their plans stay out of
-- the server log whatever log_statement, log_min_duration_statement,
-- sampling, log_min_error_statement, debug_print_* or auto_explain say
-- for everyone else, because zodan's statements carry DSNs. (A CALL that
-- the DBA typed with a literal DSN is logged by the DBA's own settings
-- before it starts; the zodan CLI sends DSNs as parameters instead.)
-- These are superuser settings; Spock's functions need a superuser too.
CREATE FUNCTION zodan_ci.zodan_quiet_settings()
RETURNS TABLE (name text, setting text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    VALUES ('log_statement', 'none'),
           ('log_min_duration_statement', '-1'),
           ('log_min_duration_sample', '-1'),
           ('log_transaction_sample_rate', '0'),
           ('log_min_error_statement', 'panic'),
           ('log_parameter_max_length', '0'),
           ('log_parameter_max_length_on_error', '0'),
           ('debug_print_parse', 'off'),
           ('debug_print_rewritten', 'off'),
           ('debug_print_plan', 'off'),
           ('auto_explain.log_min_duration', '-1');
$fn$;

-- Prepares the CALL's session, until its transaction ends (the settings
-- are transaction-local: the DBA's session is back to its own after):
-- zodan_quiet_settings, and ISO dates, because timestamps written into
-- statements for other sessions must read back the same there whatever
-- the DBA's DateStyle (with 'SQL, DMY' a journal entry would not parse).
CREATE FUNCTION zodan_ci.zodan_prepare_session()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM set_config('datestyle', 'ISO, MDY', true), set_config('intervalstyle', 'postgres', true);
    PERFORM set_config(q.name, q.setting, true)
       FROM zodan_ci.zodan_quiet_settings() q
      WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper);
END;
$fn$;

-- The statement that applies zodan_quiet_settings to a session zodan
-- opens on a node, for as long as that session lasts. Built here, not on
-- the node, so that it works on a node without zodan installed.
CREATE FUNCTION zodan_ci.zodan_quiet_statement()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format('SELECT count(set_config(s.n, s.v, false)) FROM (VALUES %s) AS s(n, v) '
                  'WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper)',
                  string_agg(format('(%L, %L)', q.name, q.setting), ', '))
      FROM zodan_ci.zodan_quiet_settings() q;
$fn$;

-- Fails clearly where dblink is missing: the psql script, like upstream's,
-- leaves creating the extension to the DBA. The public procedures call
-- this before anything else.
CREATE FUNCTION zodan_ci.zodan_require_dblink()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF to_regprocedure('ext.dblink_connect(text,text)') IS NULL THEN
        RAISE EXCEPTION 'the dblink extension is not installed in schema ext of database %', current_database()
            USING ERRCODE = 'undefined_function',
                  HINT = 'zodan talks to the nodes through dblink: run CREATE EXTENSION dblink SCHEMA ext; on every node (zodan-install install does it), then CALL again.';
    END IF;
END;
$fn$;

CREATE FUNCTION zodan_ci.zodan_conn(node text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT 'zodan/' || node $fn$;

CREATE FUNCTION zodan_ci.zodan_connected(node text)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(zodan_ci.zodan_conn(node) = ANY (ext.dblink_get_connections()), false);
$fn$;

-- Opens the connection to node. app becomes its application_name, which is
-- how a DBA (and a refused second operation) can tell zodan's sessions in
-- pg_stat_activity. timeout_s bounds each remote statement.
CREATE FUNCTION zodan_ci.zodan_connect(node text, dsn text, app text, timeout_s integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    conn text := zodan_ci.zodan_conn(node);
    st text;
    msg text;
    det text;
BEGIN
    IF dsn IS NULL OR btrim(dsn) = '' THEN
        RAISE EXCEPTION 'no DSN known for node %', node
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF zodan_ci.zodan_connected(node) THEN
        PERFORM ext.dblink_disconnect(conn);
    END IF;
    BEGIN
        PERFORM ext.dblink_connect(conn, zodan_ci.zodan_dsn_with_default(dsn, 'connect_timeout', '10'));
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'cannot connect to node % (%)', node, zodan_ci.zodan_dsn_display(dsn)
            USING ERRCODE = st,
                  DETAIL = zodan_ci.zodan_redact(coalesce(nullif(det, ''), msg)),
                  HINT = format('Check that node %s is running and accepts connections from this host with that DSN (pg_hba.conf, .pgpass).', node);
    END;
    -- The session never logs statement text or parameters (see
    -- zodan_quiet_settings): statements carry DSNs.
    -- AutoDDL stays off so nothing zodan does on one node is replayed on
    -- others. Keepalives let a node notice a vanished coordinator and
    -- release the cluster lock within seconds. What zodan writes (the
    -- journal, Spock's catalogs) survives a crash of the node even where
    -- the server runs with synchronous_commit = off: the journal is what
    -- the next run cleans up by. 'local' never waits for a standby. No
    -- parallel query: a count(*) that the comparison runs on the source
    -- must not take every core from the application.
    PERFORM ext.dblink_exec(conn, format(
        'SET application_name = %L; SET statement_timeout = %L; SET lock_timeout = %L; '
        'SET idle_in_transaction_session_timeout = 0; SET max_parallel_workers_per_gather = 0; '
        'SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; '
        'SET spock.enable_ddl_replication = off; SET spock.include_ddl_repset = off',
        left(app, 63), timeout_s || 's', timeout_s || 's'));
    PERFORM * FROM ext.dblink(conn,
        'SELECT set_config(''synchronous_commit'', ''local'', false) WHERE current_setting(''synchronous_commit'') = ''off''') AS t(v text);
    PERFORM * FROM ext.dblink(conn, zodan_ci.zodan_quiet_statement()) AS t(n bigint);
END;
$fn$;

-- Closes every zodan connection of this session, including ones a failed
-- earlier CALL in the same session left open.
CREATE FUNCTION zodan_ci.zodan_disconnect_all()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c text;
BEGIN
    IF to_regprocedure('ext.dblink_get_connections()') IS NULL THEN
        RETURN; -- no dblink, no connections (error handlers call this too)
    END IF;
    FOREACH c IN ARRAY coalesce(ext.dblink_get_connections(), '{}') LOOP
        IF c LIKE 'zodan/%' THEN
            PERFORM ext.dblink_disconnect(c);
        END IF;
    END LOOP;
END;
$fn$;

-- Runs a statement on node: a command, or a query whose rows are read
-- and discarded (Spock's API is made of functions called with SELECT).
-- Errors keep the remote SQLSTATE, detail and hint, and gain the node's
-- name.
CREATE FUNCTION zodan_ci.zodan_exec(node text, sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    IF sql ~* '^\s*(SELECT|WITH)\M' THEN
        -- Volatile calls in a subquery's target list are always evaluated.
        PERFORM * FROM ext.dblink(zodan_ci.zodan_conn(node),
                                          format('SELECT count(*) FROM (%s) AS q', sql)) AS r(n bigint);
    ELSE
        PERFORM ext.dblink_exec(zodan_ci.zodan_conn(node), sql);
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RAISE EXCEPTION 'on node %: %', node, zodan_ci.zodan_redact(msg)
        USING ERRCODE = st, DETAIL = zodan_ci.zodan_redact(coalesce(det, '')), HINT = coalesce(hnt, '');
END;
$fn$;

-- Runs a statement that carries a DSN (spock.node_create, sub_create, a
-- connection test) on node. While it runs, that session shows no query
-- text in pg_stat_activity (track_activities off) and writes no message
-- to the server log (log_min_messages fatal): Spock's own errors quote
-- the DSN whole ("dsn was: ..."). The error still reaches the caller,
-- redacted, with the node's name.
CREATE FUNCTION zodan_ci.zodan_exec_secret(node text, sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM zodan_ci.zodan_exec(node,
        'SELECT set_config(''track_activities'', ''off'', false), set_config(''log_min_messages'', ''fatal'', false)
           FROM pg_roles WHERE rolname = current_user AND rolsuper');
    BEGIN
        PERFORM zodan_ci.zodan_exec(node, sql);
    EXCEPTION WHEN OTHERS THEN
        PERFORM zodan_ci.zodan_exec_secret_done(node);
        RAISE;
    END;
    PERFORM zodan_ci.zodan_exec_secret_done(node);
END;
$fn$;

-- Gives node's session its own track_activities and log_min_messages
-- back. Never raises: after a failure the session may be gone.
CREATE FUNCTION zodan_ci.zodan_exec_secret_done(node text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM zodan_ci.zodan_exec(node,
        'SELECT set_config(name, reset_val, false) FROM pg_settings
          WHERE name IN (''track_activities'', ''log_min_messages'')
            AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper)');
EXCEPTION WHEN OTHERS THEN
    NULL;
END;
$fn$;

-- Tests, on node from_node, that it can open a connection (and with
-- replication, a logical replication connection, as Spock's walsender
-- needs) to dsn, with the dblink extension installed there in schema
-- dblink_schema. Returns NULL when it can, else libpq's reason, redacted.
CREATE FUNCTION zodan_ci.zodan_probe(from_node text, dblink_schema text, dsn text, replication boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    target text := zodan_ci.zodan_dsn_with_default(
                       zodan_ci.zodan_dsn_with_default(dsn, 'connect_timeout', '10'),
                       'application_name', 'zodan connection test');
    msg text;
    det text;
BEGIN
    IF replication THEN
        target := zodan_ci.zodan_dsn_keywords(target) || ' replication=''database''';
    END IF;
    -- dblink's unnamed connection: a new one replaces any left behind.
    PERFORM zodan_ci.zodan_exec_secret(from_node, format(
        'SELECT %1$I.dblink_connect(%2$L), %1$I.dblink_disconnect()', dblink_schema, target));
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN zodan_ci.zodan_redact(split_part(btrim(coalesce(nullif(det, ''), msg), E' \n'), E'\n', 1));
END;
$fn$;

-- Before anything is created, the connections the join will need: every
-- node to the new node (Spock's sub_create opens a normal and a
-- replication connection to its provider), the new node to every node,
-- and the new node to itself (sub_create tests its own DSN). Spock logs
-- a failing DSN whole, so it must not be the one to find out. peers maps
-- peer names to the DSNs the cluster knows them by; the new node reaches
-- the source with src_dsn. A node can test its own connections only with
-- dblink, which zodan needs on the new node alone (as upstream's Zodan):
-- where a node has none, its connections to the new node are left to
-- Spock and reported as untested. Returns {tested: n, failed: ["from ->
-- to (kind): reason", ...], untested: ["from -> to", ...]}.
CREATE FUNCTION zodan_ci.zodan_links(src text, src_dsn text, new text, new_dsn text, peers jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    targets jsonb := jsonb_build_object(src, src_dsn) || coalesce(peers, '{}'::jsonb);
    node text;
    node_dblink text;
    repl boolean;
    reason text;
    tested integer := 0;
    failed text[] := '{}'::text[];
    untested text[] := '{}'::text[];
BEGIN
    FOR node IN SELECT jsonb_object_keys(targets) ORDER BY 1 LOOP
        node_dblink := zodan_ci.zodan_value(node,
            'SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = ''dblink''');
        FOREACH repl IN ARRAY ARRAY[false, true] LOOP
            IF node_dblink IS NULL THEN
                untested := untested || format('%s -> %s', node, new);
            ELSE
                reason := zodan_ci.zodan_probe(node, node_dblink, new_dsn, repl);
                tested := tested + 1;
                IF reason IS NOT NULL THEN
                    failed := failed || format('%s -> %s (%s): %s', node, new,
                        CASE WHEN repl THEN 'replication connection' ELSE 'connection' END, reason);
                END IF;
            END IF;
            reason := zodan_ci.zodan_probe(new, 'ext', targets->>node, repl);
            tested := tested + 1;
            IF reason IS NOT NULL THEN
                failed := failed || format('%s -> %s (%s): %s', new, node,
                    CASE WHEN repl THEN 'replication connection' ELSE 'connection' END, reason);
            END IF;
        END LOOP;
    END LOOP;
    reason := zodan_ci.zodan_probe(new, 'ext', new_dsn, false);
    tested := tested + 1;
    IF reason IS NOT NULL THEN
        failed := failed || format('%s -> %s (its own DSN, which Spock tests): %s', new, new, reason);
    END IF;
    RETURN jsonb_build_object('tested', tested, 'failed', to_jsonb(failed),
                              'untested', to_jsonb(ARRAY(SELECT DISTINCT u FROM unnest(untested) u ORDER BY 1)));
END;
$fn$;

-- Runs a query on node and returns its rows as jsonb objects (column name
-- to value), so callers need no column definition list per query.
CREATE FUNCTION zodan_ci.zodan_query(node text, sql text)
RETURNS SETOF jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN QUERY
        SELECT r.j
          FROM ext.dblink(zodan_ci.zodan_conn(node),
                             format('SELECT to_jsonb(q) FROM (%s) AS q', sql)) AS r(j jsonb);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RAISE EXCEPTION 'on node %: %', node, zodan_ci.zodan_redact(msg)
        USING ERRCODE = st, DETAIL = zodan_ci.zodan_redact(coalesce(det, '')), HINT = coalesce(hnt, '');
END;
$fn$;

-- First column of the first row of a query on node, as text.
CREATE FUNCTION zodan_ci.zodan_value(node text, sql text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v text;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT r.v INTO v FROM ext.dblink(zodan_ci.zodan_conn(node), sql) AS r(v text) LIMIT 1;
    RETURN v;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RAISE EXCEPTION 'on node %: %', node, zodan_ci.zodan_redact(msg)
        USING ERRCODE = st, DETAIL = zodan_ci.zodan_redact(coalesce(det, '')), HINT = coalesce(hnt, '');
END;
$fn$;

-- Whether the node's connection still works (a node that restarted drops
-- it). Never raises.
CREATE FUNCTION zodan_ci.zodan_alive(node text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT zodan_ci.zodan_connected(node) THEN
        RETURN false;
    END IF;
    PERFORM zodan_ci.zodan_value(node, 'SELECT 1');
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END;
$fn$;

-- The cluster lock: a session-level advisory lock on every node, held by
-- the operation's connection to that node. It needs nothing installed on
-- the node, it cannot outlive the coordinator (its connections close with
-- it), and whoever holds it is visible in pg_locks/pg_stat_activity.
-- Returns NULL when taken, else a description of the holder.
CREATE FUNCTION zodan_ci.zodan_try_lock(node text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    holder jsonb;
BEGIN
    IF zodan_ci.zodan_value(node, 'SELECT pg_try_advisory_lock(2054120545, 1)')::boolean THEN
        RETURN NULL;
    END IF;
    SELECT j INTO holder FROM zodan_ci.zodan_query(node,
        'SELECT a.application_name AS app, a.backend_start AS since,
                coalesce(host(a.client_addr), ''local socket'') AS client
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = ''advisory'' AND l.classid = 2054120545
            AND l.objid = 1 AND l.objsubid = 2 AND l.granted
          LIMIT 1') AS j;
    IF holder IS NULL THEN
        RETURN 'another session (it finished while we looked)';
    END IF;
    RETURN format('%s, holding node %s since %s (connected from %s)',
                  CASE WHEN holder->>'app' LIKE 'zodan %' THEN substr(holder->>'app', 7)
                       ELSE coalesce(nullif(holder->>'app', ''), 'an unnamed session') END,
                  node,
                  to_char((holder->>'since')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                  holder->>'client');
END;
$fn$;

-- Sleeps between polls: 10 ms at first, so fast operations stay fast, then
-- growing to a quarter of a second. A poll is one small query on one node,
-- so four a second cost nothing, while a longer step would add up: a join
-- waits a dozen times, several of them while the source's apply workers
-- are paused. pg_sleep is interruptible, so a cancel lands here.
CREATE FUNCTION zodan_ci.zodan_backoff(attempt integer)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT pg_sleep(least(0.25, 0.01 * power(1.5, least(attempt, 20)))) $fn$;

-- The Spock node this database is, and the DSN others reach it with.
-- Read in a subtransaction that is then rolled back on purpose: that
-- releases the catalog locks the read took, which would otherwise last
-- as long as the CALL and block spock.node_drop of this very node (it
-- needs an exclusive lock on spock.local_node) in the zodan connection.
CREATE FUNCTION zodan_ci.zodan_local_node(OUT name text, OUT dsn text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    BEGIN
        SELECT n.node_name, i.if_dsn INTO name, dsn
          FROM spock.local_node l
          JOIN spock.node n ON n.node_id = l.node_id
          JOIN spock.node_interface i ON i.if_id = l.node_local_interface;
        RAISE EXCEPTION USING ERRCODE = 'ZD999';
    EXCEPTION WHEN SQLSTATE 'ZD999' THEN
        NULL;
    END;
END;
$fn$;

-- ---------------------------------------------------------------------------
-- Operations: progress messages, phases and the journal.
--
-- An operation (one add_node or remove_node CALL) is a list of phases,
-- each a routine that takes the operation's context (jsonb) and returns
-- it, updated. The context, built by zodan_op_context and zodan_op_begin:
--   op        journal id          kind    'add_node' | 'remove_node'
--   target    node added/removed  local   node whose connection journals
--   verbose   detail wanted?      timeout seconds a wait may stall
--   phases    the phase names     done    how many phases are done
--   phase, phase_no, phase_started        the current phase
--   dsns      node name -> DSN, in memory only: never journaled or printed
-- plus what the operation's phases hand to each other (node lists, slot
-- positions). zodan_op_fail is the one failure path.
-- The journal (zodan_operation, zodan_operation_phase) lives on the node
-- that runs the CALL and is written through that node's own zodan
-- connection, so other sessions see progress as it happens and the record
-- survives the CALL failing.
--
-- NOTICEs carry SQLSTATEs of class ZD so that programs (the zodan CLI) can
-- tell progress events apart without parsing prose; psql shows only the
-- text:
--   ZD001 phase started   ZD002 phase done     ZD003 phase skipped
--   ZD004 still waiting   ZD005 report line    ZD006 progress message
--   ZD009 verbose detail
-- ---------------------------------------------------------------------------

CREATE FUNCTION zodan_ci.zodan_say(ctx jsonb, code text, msg text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    line text := format('[%s %s] %s', ctx->>'kind', ctx->>'target', msg);
BEGIN
    IF code = 'WARNING' THEN
        RAISE WARNING USING MESSAGE = line, ERRCODE = 'ZD010';
    ELSE
        RAISE NOTICE USING MESSAGE = line, ERRCODE = code;
    END IF;
    IF ctx ? 'op' AND code <> 'ZD009' THEN
        PERFORM zodan_ci.zodan_journal(ctx, format(
            'UPDATE zodan_ci.zodan_operation SET last_message = %L, last_message_at = clock_timestamp() WHERE op_id = %s',
            msg, ctx->>'op'));
    END IF;
END;
$fn$;

CREATE FUNCTION zodan_ci.zodan_info(ctx jsonb, msg text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT zodan_ci.zodan_say(ctx, 'ZD006', msg) $fn$;

CREATE FUNCTION zodan_ci.zodan_detail(ctx jsonb, msg text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF (ctx->>'verbose')::boolean THEN
        PERFORM zodan_ci.zodan_say(ctx, 'ZD009', '  ' || msg);
    END IF;
END;
$fn$;

CREATE FUNCTION zodan_ci.zodan_warn(ctx jsonb, msg text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT zodan_ci.zodan_say(ctx, 'WARNING', msg) $fn$;

-- Writes to the journal. A journal that cannot be written must not fail
-- the operation it describes, so errors become a WARNING.
CREATE FUNCTION zodan_ci.zodan_journal(ctx jsonb, sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM zodan_ci.zodan_exec(ctx->>'local', sql);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'zodan: could not update the operation journal: %', SQLERRM;
END;
$fn$;

CREATE FUNCTION zodan_ci.zodan_seconds(since timestamptz)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT to_char(extract(epoch FROM clock_timestamp() - since), 'FM999999990.00') || ' s'
$fn$;

-- Starts phase `phase` (one of ctx->'phases'): journals it, announces it
-- with `what`, and returns ctx with the phase as the current one. The
-- start time travels in ctx, as ISO 8601 text, which reads back the same
-- whatever the session's DateStyle.
CREATE FUNCTION zodan_ci.zodan_phase_begin(ctx jsonb, phase text, what text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    no integer := array_position(ARRAY(SELECT jsonb_array_elements_text(ctx->'phases')), phase);
    total integer := jsonb_array_length(ctx->'phases');
BEGIN
    IF no IS NULL THEN
        RAISE EXCEPTION 'zodan bug: % has no phase %', ctx->>'kind', phase;
    END IF;
    -- The node's clock, not ours, stamps the journal: no timestamp is
    -- passed as text between sessions.
    PERFORM zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation SET phase = %L, phase_started_at = clock_timestamp() WHERE op_id = %s;
         INSERT INTO zodan_ci.zodan_operation_phase (op_id, phase_no, phase, started_at)
         VALUES (%s, %s, %L, clock_timestamp()) ON CONFLICT (op_id, phase_no) DO NOTHING',
        phase, ctx->>'op', ctx->>'op', no, phase));
    PERFORM zodan_ci.zodan_say(ctx, 'ZD001', format('phase %s/%s %s: %s', no, total, phase, what));
    RETURN ctx || jsonb_build_object('phase', phase, 'phase_no', no, 'phase_started', clock_timestamp());
END;
$fn$;

-- Ends the current phase with outcome 'done' or 'skipped'. Returns ctx
-- with the phase counted as done, which is how the failure handler knows
-- where an operation stopped.
CREATE FUNCTION zodan_ci.zodan_phase_done(ctx jsonb, outcome text DEFAULT 'done')
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation_phase SET finished_at = clock_timestamp(), outcome = %L
          WHERE op_id = %s AND phase_no = %s',
        outcome, ctx->>'op', ctx->>'phase_no'));
    PERFORM zodan_ci.zodan_say(ctx, CASE outcome WHEN 'skipped' THEN 'ZD003' ELSE 'ZD002' END,
        format('phase %s/%s %s: %s in %s', ctx->>'phase_no', jsonb_array_length(ctx->'phases'), ctx->>'phase', outcome,
               zodan_ci.zodan_seconds((ctx->>'phase_started')::timestamptz)));
    RETURN ctx || jsonb_build_object('done', (ctx->>'phase_no')::integer);
END;
$fn$;

-- Marks the running phase as failed in the journal (the error itself is
-- recorded by zodan_op_end).
CREATE FUNCTION zodan_ci.zodan_phase_failed(ctx jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation_phase SET finished_at = clock_timestamp(), outcome = ''failed''
          WHERE op_id = %s AND finished_at IS NULL', ctx->>'op'));
$fn$;

-- The context of an operation before it starts: who runs it, its phases,
-- its wait limit, and `state`, merged in: what the phases share (node
-- names, and under "dsns" the DSNs, which stay in this session's memory:
-- nothing journals or prints ctx whole).
CREATE FUNCTION zodan_ci.zodan_op_context(kind text, target text, local_node text, be_verbose boolean,
                                         sync_timeout interval, phases text[], state jsonb)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT state || jsonb_build_object('kind', kind, 'target', target, 'local', local_node, 'began', clock_timestamp(),
                                       'verbose', coalesce(be_verbose, false),
                                       'timeout', zodan_ci.zodan_sync_timeout(sync_timeout),
                                       'phases', to_jsonb(phases), 'done', 0);
$fn$;

-- Starts the operation described by ctx: opens the connection to the node
-- running the CALL (ctx->'dsns'->local must lead back to this very
-- database), takes the cluster lock there, and opens the journal record
-- with `details` (never DSNs). Returns ctx with the journal id. Callers
-- run it inside their failure handler (zodan_op_fail): once the lock is
-- taken, any failure must end with the connection, and so the lock, gone.
CREATE FUNCTION zodan_ci.zodan_op_begin(ctx jsonb, source text, details jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    kind text := ctx->>'kind';
    local_node text := ctx->>'local';
    local_dsn text := ctx->'dsns'->>(ctx->>'local');
    remote jsonb;
    holder text;
    op bigint;
BEGIN
    PERFORM zodan_ci.zodan_disconnect_all();
    PERFORM zodan_ci.zodan_connect(local_node, local_dsn, format('zodan %s %s', kind, ctx->>'target'), (ctx->>'timeout')::integer);

    SELECT j INTO remote FROM zodan_ci.zodan_query(local_node,
        'SELECT (SELECT system_identifier FROM pg_control_system())::text AS sysid,
                current_database() AS db') AS j;
    IF remote->>'sysid' <> (SELECT system_identifier FROM pg_control_system())::text
       OR remote->>'db' <> current_database() THEN
        RAISE EXCEPTION '% must run on node %, but the DSN given for % leads to another database (%)',
                        kind, local_node, local_node, zodan_ci.zodan_dsn_display(local_dsn)
            USING ERRCODE = 'ZDC01',
                  HINT = format('Connect to node %s''s database and run the CALL there, with a DSN that leads back to it.', local_node);
    END IF;

    holder := zodan_ci.zodan_try_lock(local_node);
    IF holder IS NOT NULL THEN
        RAISE EXCEPTION 'another zodan operation is running: %', holder
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Wait for it to finish; SELECT * FROM zodan_ci.zodan_operations on the node that runs it shows its progress. A crashed operation releases the lock as soon as its connections close.';
    END IF;

    -- The coordinator's backend start is read by the node itself: it is
    -- the same database, and no timestamp travels as text.
    op := zodan_ci.zodan_value(local_node, format(
        'INSERT INTO zodan_ci.zodan_operation (kind, node_name, source_node, coordinator_pid, coordinator_started, details)
         SELECT %L, %L, %L, a.pid, a.backend_start, %L::jsonb FROM pg_stat_activity a WHERE a.pid = %s
         RETURNING op_id',
        kind, ctx->>'target', source, coalesce(details, '{}'::jsonb), pg_backend_pid()))::bigint;
    IF op IS NULL THEN
        RAISE EXCEPTION 'could not open the journal record on %: this session (pid %) is not in pg_stat_activity there', local_node, pg_backend_pid()
            USING ERRCODE = 'ZDC01';
    END IF;
    ctx := ctx || jsonb_build_object('op', op, 'app', format('zodan %s %s (op %s on %s)', kind, ctx->>'target', op, local_node));
    PERFORM zodan_ci.zodan_exec(local_node, format('SET application_name = %L', left(ctx->>'app', 63)));
    RETURN ctx;
END;
$fn$;

-- The one failure path of add_node and remove_node (and health_check,
-- which has no journal): ctx is the context as of the last phase done;
-- st, msg, det, hnt are the error. It makes the operation's connections
-- usable, marks the phase failed, rolls back what the operation's kind
-- needs rolled back, records the outcome, closes every connection and
-- re-raises, naming the phase. Never returns.
--
-- A cancel that lands during the rollback (a second Ctrl-C, or one that
-- reached this session only after a dblink call returned) starts the
-- rollback over, which is idempotent, instead of abandoning it half done;
-- after three tries the journal says so and the next CALL finishes the
-- job. Closing the connections is retried until it happens: dblink
-- connections outlive the transaction, and with them would the cluster
-- lock.
CREATE FUNCTION zodan_ci.zodan_op_fail(ctx jsonb, st text, msg text, det text, hnt text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    phases text[] := ARRAY(SELECT jsonb_array_elements_text(coalesce(ctx->'phases', '[]')));
    no integer := coalesce((ctx->>'done')::integer, 0) + 1;
    phase text;
    cleanup text;
    recorded boolean := false;
    journal_tries integer := 0;
BEGIN
    phase := coalesce(phases[no], 'start');
    FOR attempt IN 1..3 LOOP
        BEGIN
            msg := zodan_ci.zodan_redact(msg);
            det := zodan_ci.zodan_redact(det);
            IF ctx ? 'op' THEN
                PERFORM zodan_ci.zodan_recover_connections(ctx, ctx->'dsns');
                PERFORM zodan_ci.zodan_phase_failed(ctx);
                cleanup := CASE ctx->>'kind'
                    WHEN 'add_node' THEN zodan_ci.zodan_add_node_rollback(ctx, format('phase %s/%s %s failed: %s', no, cardinality(phases), phase, msg), attempt)
                    WHEN 'remove_node' THEN zodan_ci.zodan_remove_node_rollback(ctx) END;
                PERFORM zodan_ci.zodan_op_end(ctx, CASE WHEN st = '57014' THEN 'cancelled' ELSE 'failed' END,
                                            format('%s: %s', st, msg), cleanup);
                recorded := true;
            END IF;
            PERFORM zodan_ci.zodan_disconnect_all();
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            st := '57014';
            msg := 'canceling statement due to user request';
            cleanup := format('Cancelled during the rollback; CALL %s again: it finishes the cleanup first.', ctx->>'kind');
        END;
    END LOOP;
    FOR attempt IN 1..100 LOOP
        BEGIN
            IF NOT recorded AND ctx ? 'op' AND journal_tries < 3 THEN
                journal_tries := journal_tries + 1;
                BEGIN
                    -- A cancel may have left the journal's connection busy
                    -- or closed; writing the journal needs no lock.
                    IF NOT zodan_ci.zodan_alive(ctx->>'local') THEN
                        PERFORM zodan_ci.zodan_connect(ctx->>'local', ctx->'dsns'->>(ctx->>'local'), ctx->>'app', (ctx->>'timeout')::integer);
                    END IF;
                    PERFORM zodan_ci.zodan_op_note(ctx, '{"cleanup_incomplete": true}');
                    PERFORM zodan_ci.zodan_op_end(ctx, 'cancelled', format('%s: %s', st, msg), cleanup);
                    recorded := true;
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'zodan: could not record the outcome in the operation journal: %', zodan_ci.zodan_redact(SQLERRM);
                END;
            END IF;
            PERFORM zodan_ci.zodan_disconnect_all();
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            NULL;  -- closing connections is quick, and must happen
        END;
    END LOOP;
    IF cardinality(phases) = 0 THEN
        RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = st, DETAIL = coalesce(det, ''), HINT = coalesce(hnt, '');
    END IF;
    IF NOT ctx ? 'op' THEN
        RAISE EXCEPTION '% % failed while starting: %', ctx->>'kind', ctx->>'target', msg
            USING ERRCODE = st, DETAIL = coalesce(det, ''), HINT = coalesce(hnt, '');
    END IF;
    RAISE EXCEPTION '% % failed in phase %/% %: %', ctx->>'kind', ctx->>'target', no, cardinality(phases), phase, msg
        USING ERRCODE = st,
              DETAIL = concat_ws(E'\n', nullif(det, ''), cleanup),
              HINT = coalesce(hnt, '');
END;
$fn$;

-- The end of an operation that succeeded: the closing report (from
-- report_via, over nodes), the journal, and the last line.
CREATE FUNCTION zodan_ci.zodan_op_succeeded(ctx jsonb, report_via text, nodes text[], cleanup text, last_line text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF report_via IS NOT NULL THEN
        PERFORM zodan_ci.zodan_report(ctx, report_via, nodes);
    END IF;
    IF cleanup IS NOT NULL THEN
        PERFORM zodan_ci.zodan_warn(ctx, cleanup);
    END IF;
    PERFORM zodan_ci.zodan_op_end(ctx, 'succeeded', NULL, cleanup);
    PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('%s in %s', last_line,
        zodan_ci.zodan_seconds((ctx->>'began')::timestamptz)));
END;
$fn$;

-- Whether node can be worked on: its connection works, or, when it broke
-- (the node restarted during the operation), a new one could be opened
-- with the DSN the operation used and the cluster lock taken again.
-- dsns maps node names to DSNs. Never raises.
CREATE FUNCTION zodan_ci.zodan_reachable(ctx jsonb, node text, dsns jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    i integer := 0;
BEGIN
    IF zodan_ci.zodan_alive(node) THEN
        RETURN true;
    END IF;
    IF dsns IS NULL OR NOT dsns ? node THEN
        RETURN false;
    END IF;
    -- A node that is restarting refuses connections for a moment; give it
    -- up to 30 seconds (less with a shorter sync timeout).
    LOOP
        BEGIN
            PERFORM zodan_ci.zodan_join(ctx, node, dsns->>node);
            PERFORM zodan_ci.zodan_detail(ctx, format('reconnected to %s', node));
            RETURN true;
        EXCEPTION WHEN OTHERS THEN
            IF clock_timestamp() - started > make_interval(secs => least(30, (ctx->>'timeout')::integer)) THEN
                PERFORM zodan_ci.zodan_warn(ctx, format('cannot reach %s again: %s', node, zodan_ci.zodan_redact(SQLERRM)));
                RETURN false;
            END IF;
        END;
        PERFORM zodan_ci.zodan_backoff(i + 10);
        i := i + 1;
    END LOOP;
    RETURN false;  -- not reached: the loop returns
END;
$fn$;

-- Makes every connection of the operation usable again after a failure.
-- A cancel that lands while dblink waits for a node's answer leaves that
-- connection busy with the abandoned statement ("another command is
-- already in progress"); such a connection is closed, which ends the
-- statement on the node, and opened again (dsns maps node names to DSNs)
-- with the cluster lock retaken. Never raises.
CREATE FUNCTION zodan_ci.zodan_recover_connections(ctx jsonb, dsns jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c text;
    node text;
BEGIN
    FOREACH c IN ARRAY coalesce(ext.dblink_get_connections(), '{}') LOOP
        CONTINUE WHEN c NOT LIKE 'zodan/%';
        node := substr(c, 7);
        BEGIN
            -- A busy connection may still answer PQisBusy with "no" when
            -- the abandoned statement's result has arrived unread; only a
            -- round trip tells.
            IF ext.dblink_is_busy(c) = 1 OR NOT zodan_ci.zodan_alive(node) THEN
                PERFORM ext.dblink_disconnect(c);
                IF dsns ? node THEN
                    PERFORM zodan_ci.zodan_join(ctx, node, dsns->>node);
                END IF;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- a node that cannot be reached again is reported by the cleanup
        END;
    END LOOP;
END;
$fn$;

-- Connects to a cluster node for the operation and takes the cluster lock
-- there. Fails naming the operation that holds it.
CREATE FUNCTION zodan_ci.zodan_join(ctx jsonb, node text, dsn text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    holder text;
BEGIN
    PERFORM zodan_ci.zodan_connect(node, dsn, ctx->>'app', (ctx->>'timeout')::integer);
    holder := zodan_ci.zodan_try_lock(node);
    IF holder IS NOT NULL THEN
        RAISE EXCEPTION 'another zodan operation is running: %', holder
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Only one add_node or remove_node runs per cluster at a time. Wait for it to finish; SELECT * FROM zodan_ci.zodan_operations on the node that runs it shows its progress.';
    END IF;
END;
$fn$;

-- Records facts about the operation (never DSNs) for a later cleanup.
CREATE FUNCTION zodan_ci.zodan_op_note(ctx jsonb, facts jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation SET details = details || %L::jsonb WHERE op_id = %s',
        facts, ctx->>'op'));
$fn$;

CREATE FUNCTION zodan_ci.zodan_op_end(ctx jsonb, state text, error text DEFAULT NULL, cleanup text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF ctx IS NULL OR NOT ctx ? 'op' THEN
        RETURN;
    END IF;
    PERFORM zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation
            SET state = %L, finished_at = clock_timestamp(), error = %L, cleanup = %L, phase = NULL
          WHERE op_id = %s',
        state, error, cleanup, ctx->>'op'));
END;
$fn$;

-- Operations on this node whose cleanup is still owed: those recorded as
-- running (a crash, a killed backend, a restart, or cancels that outran
-- the rollback ended them mid-way), and failed or cancelled ones whose
-- rollback could not finish. Oldest first. The caller holds the cluster
-- lock on this node, which every live operation that touches the node
-- holds too, so none of those is still at work, even when the session
-- that coordinated it is still connected. They stay as they are until
-- zodan_close_interrupted records the cleanup, so a cleanup that fails is
-- tried again next time.
CREATE FUNCTION zodan_ci.zodan_interrupted(ctx jsonb)
RETURNS SETOF jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT j FROM zodan_ci.zodan_query(ctx->>'local', format(
        'SELECT o.op_id, o.kind, o.node_name, o.source_node, o.started_at, o.phase, o.details,
                CASE WHEN o.state = ''running'' THEN ''interrupted'' ELSE o.state END AS state
           FROM zodan_ci.zodan_operation o
          WHERE o.op_id <> %s
            AND (o.state = ''running''
                 OR (o.state IN (''failed'', ''cancelled'')
                     AND coalesce((o.details->>''cleanup_incomplete'')::boolean, false)))',
        ctx->>'op')) AS j
    ORDER BY (j->>'op_id')::bigint;
$fn$;

CREATE FUNCTION zodan_ci.zodan_close_interrupted(ctx jsonb, op_id bigint, cleanup text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_journal(ctx, format(
        'UPDATE zodan_ci.zodan_operation
            SET state = CASE WHEN state = ''running'' THEN ''interrupted'' ELSE state END,
                finished_at = coalesce(finished_at, last_message_at, started_at), phase = NULL,
                cleanup = concat_ws('' '', cleanup, %L),
                details = details || ''{"cleanup_incomplete": false}''
          WHERE op_id = %s', cleanup, op_id));
$fn$;

-- ---------------------------------------------------------------------------
-- Waiting for the cluster.
--
-- Every wait is zodan_wait: it polls what it waits for and never sleeps a
-- fixed time. The limit is on stalling, not on duration: a wait fails once
-- what it watches has not moved for the operation's timeout (sync_timeout),
-- so a copy that takes hours but keeps moving is fine, and a stuck one
-- fails with the last state seen. While it waits it says where it is every
-- 30 seconds (a progress cadence for the DBA watching, not a limit).
-- ---------------------------------------------------------------------------

-- The one wait loop. probe is a function (ctx jsonb, args jsonb, memo
-- jsonb) RETURNS jsonb, called once per poll, which answers:
--   done      true once the wait is over
--   progress  text that changes whenever what is watched moves
--   state     where it is, for "still waiting" lines and the timeout error
--   memo      anything the probe wants back at the next poll
-- A probe raises to fail the wait at once (a disabled subscription, a
-- copy that cannot resume). what names the wait in messages; hint goes
-- with the timeout error. Returns the probe's last answer.
CREATE FUNCTION zodan_ci.zodan_wait(ctx jsonb, what text, probe regproc, args jsonb, hint text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    answer jsonb;
    memo jsonb := '{}'::jsonb;
    last_progress text;
    started timestamptz := clock_timestamp();
    moved timestamptz := clock_timestamp();
    reported timestamptz := clock_timestamp();
    limit_s integer := (ctx->>'timeout')::integer;
    i integer := 0;
BEGIN
    LOOP
        EXECUTE format('SELECT %s($1, $2, $3)', probe) INTO answer USING ctx, args, memo;
        EXIT WHEN (answer->>'done')::boolean;
        memo := coalesce(answer->'memo', '{}'::jsonb);
        IF i = 0 OR answer->>'progress' IS DISTINCT FROM last_progress THEN
            last_progress := answer->>'progress';
            moved := clock_timestamp();
        END IF;
        IF clock_timestamp() - moved > make_interval(secs => limit_s) THEN
            RAISE EXCEPTION 'timed out waiting for %: no progress for % s (%)', what, limit_s, answer->>'state'
                USING ERRCODE = 'ZDT01',
                      HINT = concat_ws(' ', hint, 'To allow longer stalls, pass sync_timeout => ''30 min'' or SET spock.sync_timeout.');
        END IF;
        IF clock_timestamp() - reported > interval '30 seconds' THEN
            PERFORM zodan_ci.zodan_say(ctx, 'ZD004', format('still waiting for %s: %s after %s',
                                                           what, answer->>'state', zodan_ci.zodan_seconds(started)));
            reported := clock_timestamp();
        END IF;
        PERFORM zodan_ci.zodan_backoff(i);
        i := i + 1;
    END LOOP;
    PERFORM zodan_ci.zodan_detail(ctx, format('%s: %s in %s', what, answer->>'state', zodan_ci.zodan_seconds(started)));
    RETURN answer;
END;
$fn$;

-- Probe for zodan_wait_lsn: args {node, sql, target}; sql returns one
-- pg_lsn on node, or no row.
CREATE FUNCTION zodan_ci.zodan_probe_lsn(ctx jsonb, args jsonb, memo jsonb)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT jsonb_build_object('done', coalesce(seen >= (args->>'target')::pg_lsn, false),
                              'progress', seen::text, 'lsn', seen::text,
                              'state', format('reached %s, waiting for %s', coalesce(seen::text, 'nothing yet'), args->>'target'))
      FROM (SELECT zodan_ci.zodan_value(args->>'node', args->>'sql')::pg_lsn) AS v(seen);
$fn$;

-- Polls probe (a query returning one pg_lsn, or no row) on node until it
-- returns target or later. Returns the LSN reached.
CREATE FUNCTION zodan_ci.zodan_wait_lsn(ctx jsonb, node text, probe text, target pg_lsn, what text)
RETURNS pg_lsn
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (zodan_ci.zodan_wait(ctx, what, 'zodan_ci.zodan_probe_lsn'::regproc,
                              jsonb_build_object('node', node, 'sql', probe, 'target', target),
                              format('Check replication on node %s (SELECT * FROM spock.sub_show_status()).', node))->>'lsn')::pg_lsn;
$fn$;

-- Probe for zodan_applied: how far node has applied origin's changes, by
-- the replication origin of node's subscription from origin. This is what
-- has been committed locally, not merely received.
CREATE FUNCTION zodan_ci.zodan_applied_probe(origin text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format(
        'SELECT os.remote_lsn FROM spock.subscription s
           JOIN spock.node o ON o.node_id = s.sub_origin
           JOIN pg_replication_origin_status os ON os.external_id = s.sub_slot_name
          WHERE o.node_name = %L', origin);
$fn$;

-- Emits a sync event on node and returns its LSN. Once a subscriber's
-- replication origin for node has reached that LSN (zodan_applied_probe),
-- the subscriber has applied every transaction that committed on node
-- before the event. The event is Spock's non-transactional one: Spock
-- flushes it at once, and the subscriber's apply worker advances its
-- origin to it on arrival (Spock 5.0.9 and later, zodan's minimum;
-- decoding sends it after every transaction that committed before it).
-- A transactional event reaches an idle subscriber only with the node's
-- next commit, which made every hop of an idle join cost up to a second.
CREATE FUNCTION zodan_ci.zodan_event(node text)
RETURNS pg_lsn
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_value(node, 'SELECT spock.sync_event(false)')::pg_lsn;
$fn$;

-- Emits a sync event (zodan_event) on each of origins, then waits until
-- each of subscribers has applied the events of every other origin. All
-- events go out before the first wait, so the waits overlap. Returns the
-- events' LSNs by origin.
CREATE FUNCTION zodan_ci.zodan_sync(ctx jsonb, origins text[], subscribers text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    lsns jsonb := '{}'::jsonb;
    origin text;
    sub text;
BEGIN
    FOREACH origin IN ARRAY origins LOOP
        lsns := lsns || jsonb_build_object(origin, zodan_ci.zodan_event(origin));
    END LOOP;
    FOREACH origin IN ARRAY origins LOOP
        FOREACH sub IN ARRAY subscribers LOOP
            CONTINUE WHEN sub = origin;
            PERFORM zodan_ci.zodan_wait_lsn(ctx, sub, zodan_ci.zodan_applied_probe(origin), (lsns->>origin)::pg_lsn,
                                          format('%s to apply %s''s changes up to %s', sub, origin, lsns->>origin));
        END LOOP;
    END LOOP;
    RETURN lsns;
END;
$fn$;

-- Probe for zodan_wait_replicating: args {nodes}. A subscription that is
-- disabled fails at once; one that is down (its worker not running) is
-- waited for, since workers restart. One that Spock calls down while its
-- provider streams its slot to it replicates (zodan_correct_sub_status).
CREATE FUNCTION zodan_ci.zodan_probe_replicating(ctx jsonb, args jsonb, memo jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    node text;
    bad jsonb;
    state text;
BEGIN
    FOR node IN SELECT jsonb_array_elements_text(args->'nodes') LOOP
        FOR bad IN SELECT j FROM zodan_ci.zodan_query(node,
            'SELECT s.sub_name AS name, s.sub_enabled AS enabled, coalesce(st.status, ''unknown'') AS status,
                    o.node_name AS provider, s.sub_slot_name AS slot, ss.sync_status = ''r'' AS ready
               FROM spock.subscription s
               JOIN spock.node o ON o.node_id = s.sub_origin
               LEFT JOIN spock.local_sync_status ss ON ss.sync_subid = s.sub_id AND ss.sync_nspname IS NULL
               LEFT JOIN spock.sub_show_status() st ON st.subscription_name = s.sub_name
              WHERE st.status IS DISTINCT FROM ''replicating''
              ORDER BY s.sub_name') AS j LOOP
            IF NOT (bad->>'enabled')::boolean THEN
                RAISE EXCEPTION 'subscription % on node % is disabled', bad->>'name', node
                    USING ERRCODE = 'ZDC02',
                          HINT = format('Enable it (SELECT spock.sub_enable(%L) on %s) or find out why it was disabled.', bad->>'name', node);
            END IF;
            CONTINUE WHEN zodan_ci.zodan_stale_down(bad, zodan_ci.zodan_slot_streaming(bad->>'provider', bad->>'slot'));
            state := format('%s on %s is %s', bad->>'name', node, bad->>'status');
            IF state IS DISTINCT FROM memo->>'state' THEN
                PERFORM zodan_ci.zodan_detail(ctx, state);
            END IF;
            RETURN jsonb_build_object('done', false, 'state', state, 'progress', state,
                                      'memo', jsonb_build_object('state', state));
        END LOOP;
    END LOOP;
    RETURN jsonb_build_object('done', true, 'state', 'every subscription replicates');
END;
$fn$;

-- Waits until every subscription on each of nodes is replicating.
CREATE FUNCTION zodan_ci.zodan_wait_replicating(ctx jsonb, nodes text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT FROM zodan_ci.zodan_wait(ctx, 'subscriptions to replicate', 'zodan_ci.zodan_probe_replicating'::regproc,
                                  jsonb_build_object('nodes', to_jsonb(nodes)),
                                  'A subscription that stays "down" has an apply worker that keeps failing; that node''s server log says why.');
$fn$;

-- Probe for zodan_wait_copy: args {node, sub, provider}. Progress is any
-- change in the sync step, the bytes COPY has moved or the database's
-- size (index builds). A copy whose worker died in a step it cannot
-- resume from fails (memo keeps since when it is dead, and the step last
-- announced).
CREATE FUNCTION zodan_ci.zodan_probe_copy(ctx jsonb, args jsonb, memo jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    node text := args->>'node';
    sub text := args->>'sub';
    provider text := args->>'provider';
    s jsonb;
    step text;
    dead_since timestamptz := (memo->>'dead_since')::timestamptz;
BEGIN
    SELECT j INTO s FROM zodan_ci.zodan_query(node, format(
        'SELECT ss.sync_status AS sync, coalesce(st.status, ''unknown'') AS status,
                (SELECT coalesce(sum(bytes_processed), 0) FROM pg_stat_progress_copy
                  WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS copied,
                (SELECT string_agg(relid::regclass::text, '', '') FROM pg_stat_progress_copy
                  WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS tables,
                pg_database_size(current_database()) AS size
           FROM spock.subscription sb
           JOIN spock.local_sync_status ss ON ss.sync_subid = sb.sub_id AND ss.sync_nspname IS NULL
           LEFT JOIN spock.sub_show_status(sb.sub_name) st ON true
          WHERE sb.sub_name = %L', sub)) AS j;
    IF s IS NULL THEN
        RAISE EXCEPTION 'subscription % disappeared from node % during the initial copy', sub, node
            USING ERRCODE = 'ZDC02';
    END IF;
    IF s->>'sync' = 'r' AND s->>'status' = 'replicating' THEN
        RETURN jsonb_build_object('done', true, 'state', 'copied');
    END IF;

    step := CASE s->>'sync'
                WHEN 'i' THEN 'starting' WHEN 's' THEN 'copying the schema'
                WHEN 'd' THEN 'copying data' WHEN 'c' THEN 'creating indexes and constraints'
                WHEN 'u' THEN 'catching up' WHEN 'y' THEN 'synchronized' WHEN 'r' THEN 'starting replication'
                ELSE 'in sync state ' || (s->>'sync') END;
    IF step IS DISTINCT FROM memo->>'step' THEN
        PERFORM zodan_ci.zodan_info(ctx, format('initial copy from %s: %s', provider, step));
    END IF;

    -- Spock 6.0 marks a copy that failed: nothing will move any more.
    IF s->>'sync' = 'f' THEN
        RAISE EXCEPTION 'the initial copy from % to % failed', provider, node
            USING ERRCODE = 'ZDC03',
                  DETAIL = format('Spock marked subscription %s''s initial copy on %s as failed.', sub, node),
                  HINT = format('The server log of %s names the cause (often a missing role, extension or tablespace, or a lost connection to %s).', node, provider);
    END IF;
    -- Spock cannot resume a copy that stopped in these steps. A worker
    -- shows as down for a moment while it starts; three seconds of it
    -- is a worker that exited.
    IF s->>'sync' IN ('s', 'd', 'c') AND s->>'status' = 'down' THEN
        dead_since := coalesce(dead_since, clock_timestamp());
        IF clock_timestamp() - dead_since > interval '3 seconds' THEN
            RAISE EXCEPTION 'the initial copy from % to % failed while %', provider, node, step
                USING ERRCODE = 'ZDC03',
                      DETAIL = format('Subscription %s''s worker on %s stopped and cannot resume from this step.', sub, node),
                      HINT = format('The server log of %s names the cause (often a missing role, extension or tablespace, or a lost connection to %s).', node, provider);
        END IF;
    ELSE
        dead_since := NULL;
    END IF;

    RETURN jsonb_build_object(
        'done', false,
        'progress', concat_ws('/', s->>'sync', s->>'copied', s->>'size'),
        'state', format('%s, %s copied%s, database %s, subscription %s', step, pg_size_pretty((s->>'copied')::bigint),
                        coalesce(' (now ' || (s->>'tables') || ')', ''), pg_size_pretty((s->>'size')::bigint), s->>'status'),
        'memo', jsonb_strip_nulls(jsonb_build_object('step', step, 'dead_since', dead_since)));
END;
$fn$;

-- Waits for the initial copy of subscription sub on node (structure, data,
-- constraints) to finish. A copy that takes long never times out while it
-- works.
CREATE FUNCTION zodan_ci.zodan_wait_copy(ctx jsonb, node text, sub text, provider text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT FROM zodan_ci.zodan_wait(ctx, format('the initial copy from %s to %s', provider, node),
                                  'zodan_ci.zodan_probe_copy'::regproc,
                                  jsonb_build_object('node', node, 'sub', sub, 'provider', provider),
                                  format('Check %s''s server log.', node));
$fn$;

-- Probe for zodan_wait_slot_inactive: args {node, slot}.
CREATE FUNCTION zodan_ci.zodan_probe_slot_inactive(ctx jsonb, args jsonb, memo jsonb)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT jsonb_build_object(
        'done', NOT coalesce(zodan_ci.zodan_value(args->>'node', format(
                    'SELECT active FROM pg_replication_slots WHERE slot_name = %L', args->>'slot'))::boolean, false),
        'state', format('slot %s on %s is in use', args->>'slot', args->>'node'));
$fn$;

-- Waits until no walsender uses slot on node any more.
CREATE FUNCTION zodan_ci.zodan_wait_slot_inactive(ctx jsonb, node text, slot text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT FROM zodan_ci.zodan_wait(ctx, format('slot %s on %s to be released', slot, node),
                                  'zodan_ci.zodan_probe_slot_inactive'::regproc,
                                  jsonb_build_object('node', node, 'slot', slot),
                                  format('Find the process using it: SELECT active_pid FROM pg_replication_slots WHERE slot_name = %L on %s.', slot, node));
$fn$;

-- Probe for zodan_stop_subscription: done once no process of apply worker
-- args->>'worker' is left on node and the provider's slot is free. Any
-- walsender serving the slot is ended, so that the worker stops on a
-- broken connection (a worker that was connecting just then included;
-- nothing else uses that slot). This runs inside a transaction on node,
-- where backend status is cached until pg_stat_clear_snapshot.
CREATE FUNCTION zodan_ci.zodan_probe_worker_stopped(ctx jsonb, args jsonb, memo jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    workers integer;
    walsender integer;
    ended integer := coalesce((memo->>'ended')::integer, 0);
BEGIN
    PERFORM zodan_ci.zodan_exec(args->>'node', 'SELECT pg_stat_clear_snapshot()');
    workers := zodan_ci.zodan_value(args->>'node', format(
        'SELECT count(*) FROM pg_stat_activity WHERE %L IN (application_name, backend_type)', args->>'worker'))::integer;
    walsender := zodan_ci.zodan_value(args->>'provider', format(
        'SELECT active_pid FROM pg_replication_slots WHERE slot_name = %L', args->>'slot'))::integer;
    IF walsender IS NOT NULL THEN
        PERFORM zodan_ci.zodan_exec(args->>'provider', format('SELECT pg_terminate_backend(%s)', walsender));
        PERFORM zodan_ci.zodan_detail(ctx, format('ended walsender %s on %s (slot %s) so that %s stops between two transactions',
                                                 walsender, args->>'provider', args->>'slot', args->>'worker'));
        ended := ended + 1;
    END IF;
    RETURN jsonb_build_object(
        'done', workers = 0 AND walsender IS NULL,
        'memo', jsonb_build_object('ended', ended),
        'state', format('%s process(es) "%s" on %s; slot %s on %s %s; %s walsender(s) ended',
                        workers, args->>'worker', args->>'node', args->>'slot', args->>'provider',
                        CASE WHEN walsender IS NULL THEN 'free' ELSE 'in use' END, ended));
END;
$fn$;

-- ---------------------------------------------------------------------------
-- Cluster discovery and the checks shared by health_check and add_node.
--
-- health_check reports every check; add_node runs the same 'pre' checks
-- and refuses to start when any fails, so a DBA who ran health_check has
-- seen exactly what add_node will look at.
-- ---------------------------------------------------------------------------

-- Nodes known to node (name, interface DSN), one row per node.
CREATE FUNCTION zodan_ci.zodan_cluster_nodes(node text)
RETURNS TABLE (name text, dsn text, is_local boolean)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT j->>'name', j->>'dsn', (j->>'is_local')::boolean
      FROM zodan_ci.zodan_query(node,
        'SELECT DISTINCT ON (n.node_id) n.node_name AS name, i.if_dsn AS dsn,
                EXISTS (SELECT 1 FROM spock.local_node l WHERE l.node_id = n.node_id) AS is_local
           FROM spock.node n JOIN spock.node_interface i ON i.if_nodeid = n.node_id
          ORDER BY n.node_id, i.if_id') AS j
     ORDER BY 1;
$fn$;

-- What the checks need to know about one node, in two round trips.
CREATE FUNCTION zodan_ci.zodan_facts(node text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f jsonb;
BEGIN
    SELECT j INTO f FROM zodan_ci.zodan_query(node, $q$
        SELECT (SELECT extversion FROM pg_extension WHERE extname = 'spock') AS spock,
               current_setting('server_version_num')::int AS pgnum,
               current_setting('server_version') AS pgversion,
               current_database() AS db,
               (SELECT system_identifier FROM pg_control_system())::text AS sysid,
               current_setting('wal_level') AS wal_level,
               current_setting('track_commit_timestamp') AS track_commit_timestamp,
               current_setting('output_plugin_libraries', true) AS output_plugins,
               current_setting('max_replication_slots')::int
                 - (SELECT count(*) FROM pg_replication_slots) AS free_slots,
               (SELECT coalesce(jsonb_agg(slot_name ORDER BY slot_name), '[]')
                  FROM pg_replication_slots WHERE active AND slot_type = 'logical') AS active_slots,
               (SELECT coalesce(jsonb_agg(format('%I.%I', n.nspname, c.relname) ORDER BY 1), '[]')
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'spock', 'lolor', 'pgedge_ace', 'zodan_ci')
                   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                      AND d.deptype = 'e')) AS user_tables,
               (SELECT coalesce(jsonb_agg(rolname ORDER BY rolname), '[]')
                  FROM pg_roles
                 WHERE rolname !~ '^pg_'
                   AND rolname NOT IN ('rdsadmin', 'rdsrepladmin', 'rds_superuser')
                   AND (rolcanlogin OR oid IN (
                        SELECT relowner FROM pg_class
                         WHERE relnamespace NOT IN (SELECT oid FROM pg_namespace
                                                     WHERE nspname IN ('pg_catalog', 'information_schema'))
                        UNION SELECT nspowner FROM pg_namespace
                         WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')))) AS roles,
               (SELECT coalesce(jsonb_agg(nspname ORDER BY nspname), '[]')
                  FROM pg_namespace
                 WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'public', 'spock',
                                       'lolor', 'pgedge_ace', 'snowflake', 'zodan_ci')
                   AND nspname !~ '^pg_(temp_|toast_temp_)') AS user_schemas,
               (SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND classid = 2054120545 AND objid = 1
                   AND objsubid = 2 AND granted) > 0 AS zodan_locked,
               EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'lolor') AS lolor,
               (SELECT application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.classid = 2054120545 AND l.objid = 1
                   AND l.objsubid = 2 AND l.granted LIMIT 1) AS zodan_lock_holder
    $q$) AS j;

    -- lolor's tables exist only with the extension: asked for apart.
    IF (f->>'lolor')::boolean THEN
        f := f || jsonb_build_object('lolor_rows', zodan_ci.zodan_value(node,
            'SELECT (SELECT count(*) FROM lolor.pg_largeobject) + (SELECT count(*) FROM lolor.pg_largeobject_metadata)')::bigint);
    END IF;
    IF f->>'spock' IS NOT NULL THEN
        f := f || (SELECT j FROM zodan_ci.zodan_query(node, $q$
            SELECT (SELECT n.node_name FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id) AS local_node,
                   (SELECT coalesce(jsonb_agg(jsonb_build_object(
                               'name', s.sub_name, 'enabled', s.sub_enabled,
                               'provider', o.node_name, 'status', st.status,
                               'slot', s.sub_slot_name, 'ready', ss.sync_status = 'r') ORDER BY s.sub_name), '[]')
                      FROM spock.subscription s
                      JOIN spock.node o ON o.node_id = s.sub_origin
                      LEFT JOIN spock.local_sync_status ss ON ss.sync_subid = s.sub_id AND ss.sync_nspname IS NULL
                      LEFT JOIN spock.sub_show_status() st ON st.subscription_name = s.sub_name) AS subscriptions,
                   (SELECT coalesce(jsonb_agg(DISTINCT t.nspname), '[]')
                      FROM spock.tables t WHERE t.set_name IS NOT NULL) AS replicated_schemas
        $q$) AS j);
    END IF;
    RETURN f;
END;
$fn$;

-- Whether sub ({enabled, status, ready}) is one Spock calls down only
-- because of a stale worker entry, given whether its provider's slot is
-- active (see zodan_correct_sub_status).
CREATE FUNCTION zodan_ci.zodan_stale_down(sub jsonb, slot_active boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT sub->>'status' = 'down' AND coalesce((sub->>'enabled')::boolean, false)
       AND coalesce((sub->>'ready')::boolean, false) AND coalesce(slot_active, false);
$fn$;

-- Spock's sub_show_status() calls a subscription "down" when the first
-- worker slot it finds for it is not running, even when another slot
-- holds the subscription's running apply worker. Spock 5.0 can leave such
-- a stale entry behind; its manager then keeps starting a second worker,
-- which fails because the first one holds the replication slot, and the
-- subscription looks down while it replicates. The provider has the
-- ground truth: its slot for the subscription is active only while an
-- apply worker of that subscription streams from it. This corrects
-- "down" to "replicating" in gathered facts where the subscription is
-- enabled and synchronised and the provider's facts show its slot active,
-- keeping Spock's word in spock_status.
CREATE FUNCTION zodan_ci.zodan_correct_sub_status(facts jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(jsonb_object_agg(f.key, CASE WHEN jsonb_typeof(f.value->'subscriptions') = 'array' THEN
               jsonb_set(f.value, '{subscriptions}', (
                   SELECT coalesce(jsonb_agg(CASE WHEN zodan_ci.zodan_stale_down(e.s, (facts->(e.s->>'provider')->'active_slots') ? (e.s->>'slot'))
                                                  THEN e.s || jsonb_build_object('status', 'replicating', 'spock_status', 'down')
                                                  ELSE e.s END ORDER BY e.i), '[]'::jsonb)
                     FROM jsonb_array_elements(f.value->'subscriptions') WITH ORDINALITY AS e(s, i)))
               ELSE f.value END), '{}'::jsonb)
      FROM jsonb_each(facts) AS f;
$fn$;

-- Whether provider (a connected node) has an apply worker streaming its
-- slot now. False when provider is not connected.
CREATE FUNCTION zodan_ci.zodan_slot_streaming(provider text, slot text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF provider IS NULL OR slot IS NULL OR NOT zodan_ci.zodan_connected(provider) THEN
        RETURN false;
    END IF;
    RETURN coalesce(zodan_ci.zodan_value(provider,
        format('SELECT active FROM pg_replication_slots WHERE slot_name = %L', slot))::boolean, false);
END;
$fn$;

-- Major.minor of a version string ('5.0.11' -> {5,0}); a numeric compare,
-- because '5.0.10' < '5.0.9' as text.
CREATE FUNCTION zodan_ci.zodan_version_parts(v text)
RETURNS integer[]
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT string_to_array((regexp_match(v, '^\d+(?:\.\d+)*'))[1], '.')::integer[];
$fn$;

-- ---------------------------------------------------------------------------
-- The checks, one routine each. Each takes c, the arguments of zodan_checks
-- as one jsonb object ({check_type, src, new, members, facts, unreachable};
-- an argument that is NULL is absent), and returns its rows (ok,
-- check_name, detail): none when it does not apply, as when the source or
-- the new node could not be reached. In c, facts->src are the source's
-- facts and facts->new the new node's.
-- ---------------------------------------------------------------------------

-- Reachability: one failing row per unreachable node, or one passing row.
CREATE FUNCTION zodan_ci.zodan_check_connect(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    (SELECT false, 'connect', format('node %s is unreachable: %s', node, c->'unreachable'->>node)
       FROM jsonb_object_keys(c->'unreachable') AS node
      ORDER BY node)
    UNION ALL
    SELECT true, 'connect',
           format('all %s nodes reachable: %s',
                  (SELECT count(*) FROM jsonb_object_keys(c->'facts')) + (SELECT count(*) FROM jsonb_object_keys(c->'unreachable')),
                  (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(c->'facts') k))
     WHERE c->'unreachable' = '{}'::jsonb;
$fn$;

-- Spock present and recent enough everywhere. Versions may differ (a
-- rolling upgrade adds nodes of the newer release: Spock negotiates
-- its protocol, 4 for 5.0 and 5 for 6.0, both ways), but a new node
-- must not run an older major.minor than any node of the cluster.
CREATE FUNCTION zodan_ci.zodan_check_spock_version(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := c->>'src';
    new text := c->>'new';
    facts jsonb := c->'facts';
    sf jsonb := c->'facts'->(c->>'src');
    nf jsonb := c->'facts'->(c->>'new');
    node text;
    f jsonb;
    reasons text[] := '{}'::text[];
    newer text;
    ref_mm integer[];
BEGIN
    FOR node, f IN SELECT key, value FROM jsonb_each(facts) ORDER BY key LOOP
        IF f->>'spock' IS NULL THEN
            reasons := reasons || format('Spock is not installed on %s', node);
        ELSIF zodan_ci.zodan_version_parts(f->>'spock') < zodan_ci.zodan_version_parts('5.0.9') THEN
            reasons := reasons || format('%s has Spock %s, older than 5.0.9', node, f->>'spock');
        END IF;
    END LOOP;
    IF cardinality(reasons) = 0 AND c->>'check_type' IN ('pre', 'add_node') AND nf IS NOT NULL AND sf IS NOT NULL THEN
        SELECT string_agg(format('%s (%s)', key, value->>'spock'), ', ' ORDER BY key),
               max((zodan_ci.zodan_version_parts(value->>'spock'))[1:2])
          INTO newer, ref_mm
          FROM jsonb_each(facts)
         WHERE key <> new
           AND (zodan_ci.zodan_version_parts(value->>'spock'))[1:2] > (zodan_ci.zodan_version_parts(nf->>'spock'))[1:2];
        IF newer IS NOT NULL THEN
            reasons := reasons || format('%s has Spock %s, older than %s: a node may not join a cluster that runs a newer Spock major.minor; install Spock %s on %s',
                                         new, nf->>'spock', newer, array_to_string(ref_mm, '.'), new);
        ELSIF (zodan_ci.zodan_version_parts(nf->>'spock'))[1:2] <> (zodan_ci.zodan_version_parts(sf->>'spock'))[1:2] THEN
            -- Spock 6.0 takes its initial copy with functions that only a
            -- 6.0 provider has (spock.read_peer_progress); a 6.0 join from
            -- a 5.0 source would retry the copy until the timeout.
            reasons := reasons || format('%s has Spock %s, its source %s has Spock %s: the initial copy needs the same Spock major.minor on both ends (Spock %s reads the source''s state with functions of its own release). The other nodes may run older releases, since Spock negotiates its protocol: use a source already on Spock %s (upgrade one node in place first), or give %s Spock %s',
                                         new, nf->>'spock', src, sf->>'spock',
                                         array_to_string((zodan_ci.zodan_version_parts(nf->>'spock'))[1:2], '.'),
                                         array_to_string((zodan_ci.zodan_version_parts(nf->>'spock'))[1:2], '.'),
                                         new, array_to_string((zodan_ci.zodan_version_parts(sf->>'spock'))[1:2], '.'));
        END IF;
    END IF;
    ok := cardinality(reasons) = 0; check_name := 'spock-version';
    detail := CASE WHEN NOT ok THEN array_to_string(reasons, '; ')
                   WHEN (SELECT count(DISTINCT (zodan_ci.zodan_version_parts(value->>'spock'))[1:2]) FROM jsonb_each(facts)) = 1
                   THEN format('Spock %s on every node (at least 5.0.9)',
                               (SELECT string_agg(DISTINCT value->>'spock', ', ') FROM jsonb_each(facts)))
                   ELSE format('Spock versions differ, as in a rolling upgrade: %s (every node at least 5.0.9%s)',
                               (SELECT string_agg(format('%s has %s', key, value->>'spock'), ', ' ORDER BY key) FROM jsonb_each(facts)),
                               CASE WHEN nf IS NOT NULL THEN format(', %s not older than any other', new) ELSE '' END) END;
    RETURN NEXT;
END;
$fn$;

-- PostgreSQL majors may differ too, but the copy runs the new node's
-- pg_dump against the source, and pg_dump cannot read a newer server.
CREATE FUNCTION zodan_ci.zodan_check_postgres_version(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reason IS NULL, 'postgres-version',
           CASE WHEN reason IS NOT NULL THEN reason
                WHEN (SELECT count(DISTINCT (value->>'pgnum')::integer / 10000) FROM jsonb_each(facts)) = 1
                THEN format('PostgreSQL %s on every node', (SELECT min((value->>'pgnum')::integer / 10000) FROM jsonb_each(facts)))
                ELSE format('PostgreSQL versions differ, as in a rolling upgrade: %s%s',
                            (SELECT string_agg(format('%s has %s', key, value->>'pgversion'), ', ' ORDER BY key) FROM jsonb_each(facts)),
                            CASE WHEN nf IS NOT NULL AND sf IS NOT NULL THEN format(' (%s not older than the source %s)', new, src) ELSE '' END) END
      FROM (SELECT c->'facts' AS facts, c->>'src' AS src, c->>'new' AS new,
                   c->'facts'->(c->>'src') AS sf, c->'facts'->(c->>'new') AS nf) AS a
     CROSS JOIN LATERAL (
        SELECT CASE WHEN c->>'check_type' IN ('pre', 'add_node') AND nf IS NOT NULL AND sf IS NOT NULL
                         AND (nf->>'pgnum')::integer / 10000 < (sf->>'pgnum')::integer / 10000
                    THEN format('%s runs PostgreSQL %s, older than the source %s''s %s: the copy runs %s''s pg_dump against %s, and pg_dump cannot read a newer server; add a node of PostgreSQL %s or later, or use a source of PostgreSQL %s',
                                new, nf->>'pgversion', src, sf->>'pgversion', new, src,
                                (sf->>'pgnum')::integer / 10000, (nf->>'pgnum')::integer / 10000) END AS reason) AS r;
$fn$;

-- Spock's output plugin may be loaded everywhere a slot will be made
-- (newer releases list the plugins allowed in output_plugin_libraries).
CREATE FUNCTION zodan_ci.zodan_check_output_plugin(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reasons IS NULL, 'output-plugin',
           coalesce(array_to_string(reasons, '; '), 'spock_output can be loaded on every node')
      FROM (SELECT array_agg(format('%s has output_plugin_libraries = ''%s'', without spock_output: Spock cannot create its slots there; add spock_output to that setting and reload',
                                    key, value->>'output_plugins') ORDER BY key) AS reasons
              FROM jsonb_each(c->'facts')
             WHERE value->>'output_plugins' IS NOT NULL
               AND NOT 'spock_output' = ANY (SELECT btrim(p) FROM unnest(string_to_array(value->>'output_plugins', ',')) p)) AS r;
$fn$;

-- Logical decoding and commit timestamps (Spock's conflict resolution).
CREATE FUNCTION zodan_ci.zodan_check_settings(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reasons IS NULL, 'settings',
           coalesce(array_to_string(reasons, '; '), 'wal_level=logical and track_commit_timestamp=on on every node')
      FROM (SELECT array_agg(s.reason ORDER BY f.key, s.i) AS reasons
              FROM jsonb_each(c->'facts') AS f
             CROSS JOIN LATERAL (VALUES
                 (1, CASE WHEN f.value->>'wal_level' <> 'logical'
                          THEN format('%s has wal_level=%s (needs logical)', f.key, f.value->>'wal_level') END),
                 (2, CASE WHEN f.value->>'track_commit_timestamp' <> 'on'
                          THEN format('%s has track_commit_timestamp=off', f.key) END)) AS s(i, reason)
             WHERE s.reason IS NOT NULL) AS r;
$fn$;

-- No other zodan operation in progress (add_node holds the lock itself
-- by now, so zodan_checks skips this one for it).
CREATE FUNCTION zodan_ci.zodan_check_no_operation_running(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reasons IS NULL, 'no-operation-running',
           coalesce('another zodan operation is running: ' || array_to_string(reasons, '; '),
                    'no add_node or remove_node is running')
      FROM (SELECT array_agg(format('%s is locked by %s', key,
                                    coalesce(nullif(value->>'zodan_lock_holder', ''), 'another session')) ORDER BY key) AS reasons
              FROM jsonb_each(c->'facts')
             WHERE (value->>'zodan_locked')::boolean) AS r;
$fn$;

-- Every subscription enabled and running (after a join, zodan_checks
-- reports them per direction instead: zodan_check_membership).
CREATE FUNCTION zodan_ci.zodan_check_subscriptions(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reasons IS NULL, 'subscriptions',
           coalesce(array_to_string(reasons, '; '),
                    format('all %s subscriptions enabled and replicating',
                           (SELECT sum(jsonb_array_length(coalesce(value->'subscriptions', '[]'))) FROM jsonb_each(c->'facts'))))
      FROM (SELECT array_agg(s.reason ORDER BY f.key, s.i) AS reasons
              FROM jsonb_each(c->'facts') AS f
             CROSS JOIN LATERAL (
                 SELECT e.i, CASE WHEN NOT (e.sub->>'enabled')::boolean
                                  THEN format('%s on %s is disabled', e.sub->>'name', f.key)
                                  WHEN e.sub->>'status' IS DISTINCT FROM 'replicating'
                                  THEN format('%s on %s is %s', e.sub->>'name', f.key, coalesce(e.sub->>'status', 'unknown')) END
                   FROM jsonb_array_elements(coalesce(f.value->'subscriptions', '[]')) WITH ORDINALITY AS e(sub, i)) AS s(i, reason)
             WHERE s.reason IS NOT NULL) AS r;
$fn$;

-- The source really is src (no row when the source was not reached).
CREATE FUNCTION zodan_ci.zodan_check_source_node(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT sf->>'local_node' IS NULL OR sf->>'local_node' = src, 'source-node',
           CASE WHEN sf->>'local_node' = src THEN format('%s is a Spock node', src)
                WHEN sf->>'local_node' IS NULL THEN format('%s is not a Spock node yet; add_node will register it', src)
                ELSE format('the source DSN leads to node %s, not %s', sf->>'local_node', src) END
      FROM (SELECT c->>'src' AS src, c->'facts'->(c->>'src') AS sf) AS a
     WHERE sf IS NOT NULL;
$fn$;

-- Every connection the join opens works (zodan_links), tested before
-- Spock tries one and logs the DSN it failed with (no row when the new
-- node's facts hold no links).
CREATE FUNCTION zodan_ci.zodan_check_node_connections(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT jsonb_array_length(links->'failed') = 0, 'node-connections',
           CASE WHEN jsonb_array_length(links->'failed') = 0 AND jsonb_array_length(coalesce(links->'untested', '[]')) = 0
                THEN format('%s connections tested: every node reaches %s and %s reaches every node, normal and replication connections',
                            links->>'tested', new, new)
                WHEN jsonb_array_length(links->'failed') = 0
                THEN format('%s connections tested, normal and replication; not tested, for want of dblink there (Spock tests them when it subscribes): %s',
                            links->>'tested',
                            (SELECT string_agg(u, ', ') FROM jsonb_array_elements_text(links->'untested') AS u))
                ELSE (SELECT string_agg(l, '; ') FROM jsonb_array_elements_text(links->'failed') AS l)
                     || format(' (the DSN a node is reached by is the one the cluster knows it by, in spock.node_interface; %s is reached by new_node_dsn. Check pg_hba.conf on the receiving node for both "host" and "replication" lines, and passwords.)', new) END
      FROM (SELECT c->>'new' AS new, c->'facts'->(c->>'new') AS nf, c->'facts'->(c->>'new')->'links' AS links) AS a
     WHERE nf ? 'links';
$fn$;

-- Large objects (pgEdge's lolor): where the source replicates them,
-- the copy needs lolor on the new node, with its tables empty;
-- found out here, not after a long copy (no row when the source was not
-- reached).
CREATE FUNCTION zodan_ci.zodan_check_lolor(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT cardinality(reasons) = 0, 'lolor',
           CASE WHEN cardinality(reasons) <> 0 THEN array_to_string(reasons, '; ')
                WHEN coalesce(sf->'replicated_schemas', '[]') ? 'lolor'
                THEN format('the source replicates large objects; %s has lolor, with empty tables', new)
                ELSE 'no large objects (lolor) to copy' END
      FROM (SELECT c->>'src' AS src, c->>'new' AS new,
                   c->'facts'->(c->>'src') AS sf, c->'facts'->(c->>'new') AS nf) AS a
     CROSS JOIN LATERAL (
        SELECT array_remove(ARRAY[
                   CASE WHEN coalesce(sf->'replicated_schemas', '[]') ? 'lolor' AND NOT coalesce((nf->>'lolor')::boolean, false)
                        THEN format('the source %s replicates large objects (lolor tables), but database %s on %s does not have the lolor extension installed. Please run CREATE EXTENSION lolor on the new node first',
                                    src, nf->>'db', new) END,
                   CASE WHEN coalesce((nf->>'lolor_rows')::bigint, 0) > 0
                        THEN format('database %s on %s has pre-existing large object data in the lolor tables (%s rows): they must be empty so that the source''s large objects can be copied',
                                    nf->>'db', new, nf->>'lolor_rows') END], NULL) AS reasons) AS r
     WHERE sf IS NOT NULL;
$fn$;

-- The name is free and the new database is not a node yet.
CREATE FUNCTION zodan_ci.zodan_check_new_node_name(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT taken IS NULL, 'new-node-name', coalesce(taken, format('%s is not yet a node of the cluster', new))
      FROM (SELECT c->>'src' AS src, c->>'new' AS new, c->'facts'->(c->>'new') AS nf) AS a
     CROSS JOIN LATERAL (
        SELECT CASE
            WHEN new = src THEN format('the new node cannot be named like the source (%s)', src)
            WHEN new IN (SELECT jsonb_array_elements_text(c->'members'))
            THEN format('node name %s is already used in the cluster (as seen from %s)', new, src)
            WHEN nf->>'local_node' IS NOT NULL THEN format('the new database is already Spock node %s', nf->>'local_node')
        END AS taken) AS t;
$fn$;

-- Spock builds slot and origin names from node and subscription
-- names, mapping every character outside [a-z0-9_] to '_' and
-- cutting at 63 bytes: nodes n-4 and n_4 would share slots, and
-- dropping one's would break the other.
CREATE FUNCTION zodan_ci.zodan_check_slot_names(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new text := c->>'new';
    facts jsonb := c->'facts';
    sf jsonb := c->'facts'->(c->>'src');
    nf jsonb := c->'facts'->(c->>'new');
    nodes text[] := ARRAY(SELECT jsonb_array_elements_text(c->'members')) || (c->>'new');
    taken text;
BEGIN
    -- (Spock's own function names them; without Spock there are none.)
    IF to_regprocedure('spock.spock_gen_slot_name(name,name,name)') IS NOT NULL THEN
        SELECT string_agg(format('%s (for %s)', slot, pairs), '; ' ORDER BY slot) INTO taken
          FROM (SELECT g.slot, string_agg(format('%s->%s', g.a, g.b), ' and ' ORDER BY g.a, g.b) AS pairs
                  FROM (SELECT x.a, y.b,
                               spock.spock_gen_slot_name(coalesce(facts->y.b->>'db', sf->>'db', nf->>'db')::name, x.a::name,
                                                         zodan_ci.zodan_sub_name(x.a, y.b)::name)::text AS slot
                          FROM unnest(nodes) x(a) CROSS JOIN unnest(nodes) y(b)
                         WHERE x.a <> y.b) AS g(a, b, slot)
                 GROUP BY g.slot
                HAVING count(*) > 1 AND bool_or(g.a = new OR g.b = new)) AS clash;
    END IF;
    ok := taken IS NULL; check_name := 'slot-names';
    detail := CASE WHEN ok THEN format('the slots and origins for %s have names of their own', new)
                   ELSE format('node name %s gives the same replication slot names as an existing node: %s; choose another name',
                               new, taken) END;
    RETURN NEXT;
END;
$fn$;

-- add_node copies everything from the source into an empty database.
CREATE FUNCTION zodan_ci.zodan_check_new_node_empty(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT jsonb_array_length(nf->'user_tables') = 0, 'new-node-empty',
           CASE WHEN jsonb_array_length(nf->'user_tables') = 0 THEN format('%s''s database has no user tables', new)
                ELSE format('%s''s database already has %s user tables (%s); add_node copies everything from %s into an empty database',
                            new, jsonb_array_length(nf->'user_tables'),
                            (SELECT string_agg(t, ', ') FROM (SELECT jsonb_array_elements_text(nf->'user_tables') t LIMIT 5) x)
                              || CASE WHEN jsonb_array_length(nf->'user_tables') > 5 THEN ', ...' ELSE '' END,
                            src) END
      FROM (SELECT c->>'src' AS src, c->>'new' AS new, c->'facts'->(c->>'new') AS nf) AS a;
$fn$;

-- The new node has every role of the source, which the copy's objects
-- are owned by (no row when the source was not reached).
CREATE FUNCTION zodan_ci.zodan_check_roles(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT missing IS NULL, 'roles',
           CASE WHEN missing IS NULL THEN format('%s has every role of %s', new, src)
                ELSE format('%s lacks roles that %s has: %s (create them on %s first)',
                            new, src, array_to_string(missing, ', '), new) END
      FROM (SELECT c->>'src' AS src, c->>'new' AS new,
                   c->'facts'->(c->>'src') AS sf, c->'facts'->(c->>'new') AS nf) AS a
     CROSS JOIN LATERAL (
        SELECT array_agg(r ORDER BY r) AS missing
          FROM jsonb_array_elements_text(sf->'roles') r
         WHERE NOT (nf->'roles') ? r) AS m
     WHERE sf IS NOT NULL;
$fn$;

-- Schemas already on the new node are kept, and the copy skips them: none
-- may hold tables the source replicates (no row when the source was not
-- reached).
CREATE FUNCTION zodan_ci.zodan_check_existing_schemas(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT missing IS NULL, 'existing-schemas',
           CASE WHEN missing IS NULL THEN
                    CASE WHEN jsonb_array_length(nf->'user_schemas') = 0
                         THEN format('%s has no schemas of its own', new)
                         ELSE format('schemas already on %s are kept and skipped by the copy: %s', new,
                                     (SELECT string_agg(s, ', ') FROM jsonb_array_elements_text(nf->'user_schemas') s)) END
                ELSE format('schemas %s exist on %s and would be skipped by the copy, but %s replicates tables in them; drop them on %s',
                            array_to_string(missing, ', '), new, src, new) END
      FROM (SELECT c->>'src' AS src, c->>'new' AS new,
                   c->'facts'->(c->>'src') AS sf, c->'facts'->(c->>'new') AS nf) AS a
     CROSS JOIN LATERAL (
        SELECT array_agg(s ORDER BY s) AS missing
          FROM jsonb_array_elements_text(nf->'user_schemas') s
         WHERE coalesce(sf->'replicated_schemas', '[]') ? s) AS m
     WHERE sf IS NOT NULL;
$fn$;

-- Replication slots: the new node serves every existing node, and
-- every existing node serves the new one.
CREATE FUNCTION zodan_ci.zodan_check_replication_slots(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT reasons IS NULL, 'replication-slots',
           coalesce(array_to_string(reasons, '; '), 'enough free replication slots on every node')
      FROM (SELECT array_agg(format('%s has %s free replication slots, needs %s (raise max_replication_slots)',
                                    f.key, f.value->>'free_slots', n.need) ORDER BY f.key) AS reasons
              FROM jsonb_each(c->'facts') AS f
             CROSS JOIN LATERAL (
                SELECT CASE WHEN f.key = c->>'new'
                            THEN (SELECT count(*) FROM jsonb_object_keys(c->'facts'))
                                 + (SELECT count(*) FROM jsonb_object_keys(c->'unreachable')) - 1
                            ELSE 1 END AS need) AS n
             WHERE (f.value->>'free_slots')::integer < n.need) AS r;
$fn$;

-- After a join: the new node is a member and replicates both ways, one
-- row for the membership, then per other node one for its subscription
-- from the new node and one for the new node's subscription from it.
CREATE FUNCTION zodan_ci.zodan_check_membership(c jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.ok, r.check_name, r.detail
      FROM (SELECT 0 AS part, NULL::text AS node, 0 AS step, nf->>'local_node' = new AS ok, 'membership' AS check_name,
                   CASE WHEN nf->>'local_node' = new THEN format('%s is a Spock node of the cluster', new)
                        ELSE format('%s''s database is not Spock node %s', new, new) END AS detail
              FROM (SELECT c->>'new' AS new, c->'facts'->(c->>'new') AS nf) AS a
            UNION ALL
            SELECT 1, f.key, d.step, d.sub IS NOT NULL AND (d.sub->>'status') = 'replicating', d.check_name,
                   CASE WHEN d.sub IS NULL THEN format('%s has no subscription from %s', d.subscriber, d.provider)
                        ELSE format('%s on %s is %s', d.sub->>'name', d.subscriber, coalesce(d.sub->>'status', 'unknown')) END
              FROM jsonb_each(c->'facts') AS f
             CROSS JOIN LATERAL (VALUES
                 (1, 'subscription-from-new', f.key, c->>'new',
                  (SELECT s FROM jsonb_array_elements(coalesce(f.value->'subscriptions', '[]')) s
                    WHERE s->>'provider' = c->>'new' LIMIT 1)),
                 (2, 'subscription-to-new', c->>'new', f.key,
                  (SELECT s FROM jsonb_array_elements(coalesce(c->'facts'->(c->>'new')->'subscriptions', '[]')) s
                    WHERE s->>'provider' = f.key LIMIT 1))) AS d(step, check_name, subscriber, provider, sub)
             WHERE f.key <> c->>'new') AS r
     ORDER BY r.part, r.node, r.step;
$fn$;

-- All the checks, in the order they are reported; check_type is 'pre',
-- 'post', or 'add_node' ('pre' for a caller that already holds the
-- cluster lock). members are the node names the source knows; facts maps
-- each reachable node (source and new node included) to zodan_facts;
-- unreachable maps each node that could not be reached to the reason.
-- Returns one row per check.
CREATE FUNCTION zodan_ci.zodan_checks(check_type text, src text, new text, members text[], facts jsonb, unreachable jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The arguments as the checks take them: NULL ones are left out, so
    -- c->'facts' is NULL exactly when facts is; members flattened, as
    -- = ANY reads them.
    c jsonb := (SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb)
                  FROM (VALUES ('check_type', to_jsonb(check_type)), ('src', to_jsonb(src)), ('new', to_jsonb(new)),
                               ('members', to_jsonb(ARRAY(SELECT unnest(members)))), ('facts', facts),
                               ('unreachable', unreachable)) AS a(k, v)
                 WHERE v IS NOT NULL);
BEGIN
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_connect(c);
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_spock_version(c);
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_postgres_version(c);
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_output_plugin(c);
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_settings(c);
    IF check_type <> 'add_node' THEN
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_no_operation_running(c);
    END IF;
    IF NOT (check_type = 'post' AND new IS NOT NULL) THEN
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_subscriptions(c);
    END IF;
    RETURN QUERY SELECT * FROM zodan_ci.zodan_check_source_node(c);

    IF new IS NULL OR facts->new IS NULL THEN
        RETURN;
    END IF;

    IF check_type IN ('pre', 'add_node') THEN
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_node_connections(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_lolor(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_new_node_name(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_slot_names(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_new_node_empty(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_roles(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_existing_schemas(c);
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_replication_slots(c);
    ELSE
        RETURN QUERY SELECT * FROM zodan_ci.zodan_check_membership(c);
    END IF;
END;
$fn$;

-- ---------------------------------------------------------------------------
-- Replication sets.
--
-- Nothing in Spock copies replication set membership to a new node; what
-- the new node gets from the copy is whatever AutoDDL derived while the
-- schema was restored (tables routed by primary key, not by what the source
-- says). add_node therefore mirrors the source's sets exactly: definitions,
-- table memberships with column lists and row filters, and sequences.
-- ---------------------------------------------------------------------------

-- The query that describes a node's replication sets as one jsonb value.
-- pgEdge ACE's schema is node-local state that Spock's copy always leaves
-- out (5.0's AutoDDL may still have put its tables in a set): it is no
-- part of what a new node must replicate.
CREATE FUNCTION zodan_ci.zodan_repset_spec_query()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT $q$
    SELECT jsonb_build_object(
        'sets', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'name', rs.set_name, 'insert', rs.replicate_insert, 'update', rs.replicate_update,
                        'delete', rs.replicate_delete, 'truncate', rs.replicate_truncate) ORDER BY rs.set_name), '[]')
                   FROM spock.replication_set rs JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid),
        'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'set', rs.set_name, 'relation', format('%I.%I', n.nspname, c.relname),
                        'columns', rst.set_att_list,
                        'row_filter', pg_get_expr(rst.set_row_filter, rst.set_reloid))
                        ORDER BY rs.set_name, n.nspname, c.relname), '[]')
                     FROM spock.replication_set_table rst
                     JOIN spock.replication_set rs ON rs.set_id = rst.set_id
                     JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid
                     JOIN pg_class c ON c.oid = rst.set_reloid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname <> 'pgedge_ace'),
        'sequences', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'set', rs.set_name, 'relation', format('%I.%I', n.nspname, c.relname))
                        ORDER BY rs.set_name, n.nspname, c.relname), '[]')
                     FROM spock.replication_set_seq rss
                     JOIN spock.replication_set rs ON rs.set_id = rss.set_id
                     JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid
                     JOIN pg_class c ON c.oid = rss.set_seqoid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname <> 'pgedge_ace')) AS spec
    $q$;
$fn$;

CREATE FUNCTION zodan_ci.zodan_repset_spec(node text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_value(node, zodan_ci.zodan_repset_spec_query())::jsonb;
$fn$;

-- One comparable line per set, table membership and sequence membership.
CREATE FUNCTION zodan_ci.zodan_repset_entries(spec jsonb)
RETURNS SETOF text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format('set %s (%s)', s->>'name',
                  concat_ws(',', CASE WHEN (s->>'insert')::boolean THEN 'insert' END,
                                 CASE WHEN (s->>'update')::boolean THEN 'update' END,
                                 CASE WHEN (s->>'delete')::boolean THEN 'delete' END,
                                 CASE WHEN (s->>'truncate')::boolean THEN 'truncate' END))
      FROM jsonb_array_elements(spec->'sets') s
    UNION ALL
    SELECT format('table %s in %s%s%s', t->>'relation', t->>'set',
                  coalesce(' columns ' || (t->'columns')::text, ''),
                  coalesce(' where ' || (t->>'row_filter'), ''))
      FROM jsonb_array_elements(spec->'tables') t
    UNION ALL
    SELECT format('sequence %s in %s', q->>'relation', q->>'set')
      FROM jsonb_array_elements(spec->'sequences') q;
$fn$;

-- Makes the local node's replication sets exactly spec (see
-- zodan_repset_spec). Runs on the new node through its zodan connection,
-- after the copy created the tables. Returns a one-line summary.
CREATE FUNCTION zodan_ci.zodan_apply_repsets(spec jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    created integer := 0;
    altered integer := 0;
    dropped integer := 0;
    tables integer := 0;
    sequences integer := 0;
    missing text[] := '{}'::text[];
    left_out text[] := '{}'::text[];
    node_local text[];
    reserved text[];
    blocked text[];
    never_in_sets text[];
BEGIN
    FOR r IN SELECT rs.set_name, rst.set_reloid
               FROM spock.replication_set_table rst
               JOIN spock.replication_set rs ON rs.set_id = rst.set_id
               JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid LOOP
        PERFORM spock.repset_remove_table(r.set_name, r.set_reloid, false);
    END LOOP;
    FOR r IN SELECT rs.set_name, rss.set_seqoid
               FROM spock.replication_set_seq rss
               JOIN spock.replication_set rs ON rs.set_id = rss.set_id
               JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid LOOP
        PERFORM spock.repset_remove_seq(r.set_name, r.set_seqoid);
    END LOOP;

    FOR r IN SELECT s->>'name' AS name, (s->>'insert')::boolean AS ins, (s->>'update')::boolean AS upd,
                    (s->>'delete')::boolean AS del, (s->>'truncate')::boolean AS trunc
               FROM jsonb_array_elements(spec->'sets') s LOOP
        IF EXISTS (SELECT 1 FROM spock.replication_set rs JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid
                    WHERE rs.set_name = r.name) THEN
            PERFORM spock.repset_alter(r.name::name, r.ins, r.upd, r.del, r.trunc);
            altered := altered + 1;
        ELSE
            PERFORM spock.repset_create(r.name::name, r.ins, r.upd, r.del, r.trunc);
            created := created + 1;
        END IF;
    END LOOP;
    FOR r IN SELECT rs.set_name FROM spock.replication_set rs JOIN spock.local_node ln ON ln.node_id = rs.set_nodeid
              WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(spec->'sets') s WHERE s->>'name' = rs.set_name) LOOP
        PERFORM spock.repset_drop(r.set_name, true);
        dropped := dropped + 1;
    END LOOP;

    -- Schemas Spock's copy leaves out, as it decides it on this (the
    -- subscribing) node: node-local state such as pgEdge ACE's, Spock's
    -- own and its companions', and with Spock 6.0 what spock.reserved_object
    -- marks exclude_from_dump. Their relations are not here to add.
    -- Of those, some never belong in a replication set here, even where
    -- this node has its own (pgEdge ACE's state; with 6.0 what the
    -- catalog marks block_in_repset).
    node_local := ARRAY['pgedge_ace', 'spock', 'snowflake', 'lolor'];
    never_in_sets := ARRAY['pgedge_ace'];
    IF to_regclass('spock.reserved_object') IS NOT NULL THEN
        EXECUTE 'SELECT coalesce(array_agg(name::text) FILTER (WHERE exclude_from_dump), ''{}''),
                        coalesce(array_agg(name::text) FILTER (WHERE block_in_repset), ''{}'')
                   FROM spock.reserved_object WHERE kind = ''schema'''
           INTO reserved, blocked;
        node_local := node_local || reserved;
        never_in_sets := never_in_sets || blocked;
    END IF;

    FOR r IN SELECT t->>'set' AS set_name, t->>'relation' AS rel, t->>'row_filter' AS row_filter,
                    CASE WHEN jsonb_typeof(t->'columns') = 'array'
                         THEN ARRAY(SELECT jsonb_array_elements_text(t->'columns')) END AS cols
               FROM jsonb_array_elements(spec->'tables') t LOOP
        IF (parse_ident(r.rel))[1] = ANY (never_in_sets)
           OR to_regclass(r.rel) IS NULL AND (parse_ident(r.rel))[1] = ANY (node_local) THEN
            left_out := left_out || r.rel;
            CONTINUE;
        ELSIF to_regclass(r.rel) IS NULL THEN
            missing := missing || r.rel;
            CONTINUE;
        END IF;
        PERFORM spock.repset_add_table(r.set_name::name, r.rel::regclass, false, r.cols, r.row_filter, false);
        tables := tables + 1;
    END LOOP;
    FOR r IN SELECT q->>'set' AS set_name, q->>'relation' AS rel FROM jsonb_array_elements(spec->'sequences') q LOOP
        IF (parse_ident(r.rel))[1] = ANY (never_in_sets)
           OR to_regclass(r.rel) IS NULL AND (parse_ident(r.rel))[1] = ANY (node_local) THEN
            left_out := left_out || r.rel;
            CONTINUE;
        ELSIF to_regclass(r.rel) IS NULL THEN
            missing := missing || r.rel;
            CONTINUE;
        END IF;
        PERFORM spock.repset_add_seq(r.set_name::name, r.rel::regclass, false);
        sequences := sequences + 1;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'the source replicates relations that the copy did not create here: %', array_to_string(missing, ', ')
            USING ERRCODE = 'ZDC04',
                  HINT = 'Were they created in a schema that already existed on the new node (and so was skipped by the copy)?';
    END IF;
    RETURN format('%s sets created, %s updated, %s dropped; %s tables and %s sequences assigned%s',
                  created, altered, dropped, tables, sequences,
                  CASE WHEN cardinality(left_out) > 0
                       THEN format(' (left out, as Spock''s copy leaves their schemas out: %s)', array_to_string(left_out, ', '))
                       ELSE '' END);
END;
$fn$;

-- A statement that puts every user table and sequence of a database that
-- has just become a Spock node into the built-in replication sets, the way
-- AutoDDL would have had the tables been created on a node: tables with a
-- primary key or replica identity into 'default', the rest into
-- 'default_insert_only', sequences into 'default'. add_node runs it on a
-- source that was not a Spock node yet, so that a lone database grows
-- into a cluster with all of its data replicated. It is a DO block so it
-- needs nothing of zodan installed on the source.
CREATE FUNCTION zodan_ci.zodan_default_repsets_sql()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT $do$
DO $zodan$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind,
               (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                                                 AND (i.indisprimary OR i.indisreplident))) AS keyed
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'S') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'spock', 'lolor', 'pgedge_ace', 'snowflake', 'zodan_ci')
           AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1
    LOOP
        IF r.relkind = 'S' THEN
            PERFORM spock.repset_add_seq('default', r.rel);
        ELSIF r.keyed THEN
            PERFORM spock.repset_add_table('default', r.rel);
        ELSE
            PERFORM spock.repset_add_table('default_insert_only', r.rel);
        END IF;
    END LOOP;
END
$zodan$
$do$;
$fn$;

-- ---------------------------------------------------------------------------
-- Taking a node out of a cluster, and undoing a join.
--
-- A failed add_node is rolled back with the same steps that remove_node
-- uses, because a half-added node is just a node to remove: every object
-- either belongs to it by name (sub_<x>_<node>, sub_<node>_<x>, their slots
-- and origins, its node rows and progress rows) or was recorded in the
-- journal before it was created. Every step tolerates what is already gone,
-- so a cleanup can be repeated, and a node that cannot be reached yields
-- the statements to run there later instead of stopping the rest.
-- ---------------------------------------------------------------------------

-- Gives each live connection of nodes at least five minutes per
-- statement, for cleanups that follow a failure caused by a short
-- sync_timeout.
CREATE FUNCTION zodan_ci.zodan_relax_timeouts(ctx jsonb, nodes text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    node text;
    secs integer := greatest((ctx->>'timeout')::integer, 300);
BEGIN
    FOREACH node IN ARRAY nodes LOOP
        IF zodan_ci.zodan_alive(node) THEN
            PERFORM zodan_ci.zodan_exec(node, format('SET statement_timeout = %L; SET lock_timeout = %L',
                                                   secs || 's', secs || 's'));
        END IF;
    END LOOP;
END;
$fn$;

-- Name of the subscription on subscriber that receives provider's changes.
CREATE FUNCTION zodan_ci.zodan_sub_name(provider text, subscriber text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT format('sub_%s_%s', provider, subscriber) $fn$;

-- A condition on pg_replication_slots (on node) that matches the slot
-- target's subscription from node reads. Spock names that slot after the
-- subscriber's database, node and the subscription; the database part is
-- left open, so the match needs no guess at the target's database, which a
-- target that is down cannot be asked for. The other two parts name this
-- one pair of nodes.
CREATE FUNCTION zodan_ci.zodan_peer_slot_condition(node text, target text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- spk_<db>_<node>_<subscription>, with a one-letter stand-in database
    tail text := substr(spock.spock_gen_slot_name('x'::name, node::name, zodan_ci.zodan_sub_name(node, target)::name)::text, 6);
BEGIN
    RETURN format('database = current_database() AND slot_name LIKE ''spk\_%%'' AND right(slot_name, %s) = %L',
                  length(tail), tail);
END;
$fn$;

-- Statements that remove every trace of target from one node, in the order
-- they must run. Built from names alone so they can also be handed to a
-- DBA for a node that is down.
CREATE FUNCTION zodan_ci.zodan_detach_statements(node text, target text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- the slot target's own subscription reads from node
    slot text := zodan_ci.zodan_peer_slot_condition(node, target);
BEGIN
    RETURN ARRAY[
        -- subscriptions on node that receive from target
        format($s$SELECT spock.sub_drop(s.sub_name, true) FROM spock.subscription s JOIN spock.node o ON o.node_id = s.sub_origin WHERE o.node_name = %L$s$, target),
        format($s$SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE %s AND active_pid IS NOT NULL$s$, slot),
        format($s$SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE %s AND NOT active$s$, slot),
        format($s$SELECT spock.node_drop(%L, true)$s$, target),
        -- progress rows are keyed by node id, which is gone by now (the
        -- last sub_drop from a provider drops its node row, too)
        -- (only Spock 5.0 has the table; 6.0 keeps progress in memory
        -- behind a view and has no call to remove a node's entry)
        $s$DO $progress$ BEGIN IF to_regclass('spock.progress') IN (SELECT oid FROM pg_class WHERE relkind = 'r') THEN DELETE FROM spock.progress WHERE node_id NOT IN (SELECT node_id FROM spock.node) OR remote_node_id NOT IN (SELECT node_id FROM spock.node); END IF; END $progress$$s$
    ];
END;
$fn$;

-- Removes target from each reachable node of nodes (see zodan_reachable
-- for dsns). Returns, per node that could not be cleaned, the statements
-- still to run there.
CREATE FUNCTION zodan_ci.zodan_detach(ctx jsonb, target text, nodes text[], dsns jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    node text;
    stmt text;
    pending jsonb := '{}'::jsonb;
    i integer;
    stmts text[];
    slot text;
BEGIN
    FOREACH node IN ARRAY nodes LOOP
        CONTINUE WHEN node = target;
        stmts := zodan_ci.zodan_detach_statements(node, target);
        IF NOT zodan_ci.zodan_reachable(ctx, node, dsns) THEN
            pending := pending || jsonb_build_object(node, to_jsonb(stmts));
            CONTINUE;
        END IF;
        i := 0;
        BEGIN
            FOREACH stmt IN ARRAY stmts LOOP
                i := i + 1;
                PERFORM zodan_ci.zodan_exec(node, stmt);
                IF i = 2 THEN
                    -- a terminated walsender releases its slot asynchronously
                    FOR slot IN SELECT j->>'slot_name' FROM zodan_ci.zodan_query(node, format(
                        'SELECT slot_name FROM pg_replication_slots WHERE %s', zodan_ci.zodan_peer_slot_condition(node, target))) j LOOP
                        PERFORM zodan_ci.zodan_wait_slot_inactive(ctx, node, slot);
                    END LOOP;
                END IF;
            END LOOP;
            PERFORM zodan_ci.zodan_detail(ctx, format('removed %s from %s', target, node));
        EXCEPTION WHEN OTHERS THEN
            PERFORM zodan_ci.zodan_warn(ctx, format('could not remove %s from %s: %s', target, node, SQLERRM));
            pending := pending || jsonb_build_object(node, to_jsonb(stmts[i:]));
        END;
    END LOOP;
    RETURN pending;
END;
$fn$;

-- What a database holds before the initial copy fills it, so that a failed
-- join can take the copy out again without touching anything that was
-- there before. Runs on the new node.
CREATE FUNCTION zodan_ci.zodan_content_snapshot()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT jsonb_build_object(
        'schemas', (SELECT coalesce(jsonb_agg(nspname), '[]') FROM pg_namespace),
        'extensions', (SELECT coalesce(jsonb_agg(extname), '[]') FROM pg_extension),
        'relations', (SELECT coalesce(jsonb_agg(c.oid), '[]') FROM pg_class c
                       WHERE c.relnamespace = 'public'::regnamespace),
        'routines', (SELECT coalesce(jsonb_agg(p.oid), '[]') FROM pg_proc p
                      WHERE p.pronamespace = 'public'::regnamespace),
        'types', (SELECT coalesce(jsonb_agg(t.oid), '[]') FROM pg_type t
                   WHERE t.typnamespace = 'public'::regnamespace));
$fn$;

-- Drops what appeared in this database since snapshot was taken: new
-- schemas, new extensions, and new objects in public (the one schema that
-- exists on both sides and is not skipped by the copy). Extension members
-- are left to their extension. Runs on the new node, through the zodan
-- connection (AutoDDL off), after its subscriptions are gone.
CREATE FUNCTION zodan_ci.zodan_content_reset(snapshot jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN SELECT e.extname FROM pg_extension e
              WHERE NOT (snapshot->'extensions') ? e.extname LOOP
        EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
        dropped := dropped + 1;
    END LOOP;
    FOR r IN SELECT n.nspname FROM pg_namespace n
              WHERE NOT (snapshot->'schemas') ? n.nspname
                AND n.nspname !~ '^pg_(temp_|toast_temp_)' LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
        dropped := dropped + 1;
    END LOOP;
    FOR r IN SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS name
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                AND NOT (snapshot->'relations') @> to_jsonb(c.oid::bigint)
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                   AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
              ORDER BY CASE c.relkind WHEN 'v' THEN 0 WHEN 'm' THEN 1 ELSE 2 END LOOP
        -- an earlier CASCADE may already have taken it
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = r.oid);
        EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                      ELSE 'TABLE' END, r.name);
        dropped := dropped + 1;
    END LOOP;
    FOR r IN SELECT p.oid FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace
                AND NOT (snapshot->'routines') @> to_jsonb(p.oid::bigint)
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                   AND d.objid = p.oid AND d.deptype = 'e') LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_proc WHERE oid = r.oid);
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.oid::regprocedure);
        dropped := dropped + 1;
    END LOOP;
    FOR r IN SELECT t.oid FROM pg_type t
              WHERE t.typnamespace = 'public'::regnamespace
                AND t.typtype IN ('c', 'd', 'e', 'r', 'm', 'b')
                AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                AND t.typelem = 0
                AND NOT (snapshot->'types') @> to_jsonb(t.oid::bigint)
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                                   AND d.objid = t.oid AND d.deptype IN ('e', 'i')) LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_type WHERE oid = r.oid);
        EXECUTE format('DROP TYPE IF EXISTS %s CASCADE', r.oid::regtype);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$fn$;

-- Statements that stop everything a node runs for its subscriptions, so
-- that they can be dropped: the sessions of an initial copy (pg_restore,
-- and the COPY sessions, which stopping the apply worker leaves be), then
-- the subscriptions' apply workers. spock.sub_drop waits for a worker to
-- exit, but Spock workers only note SIGTERM, so one waiting for a lock
-- that sub_drop's own transaction holds (it deletes the subscription's
-- sync status while the worker of an initial copy updates it) would wait
-- forever; a cancel (SIGINT) breaks such a wait. Disabling first keeps
-- Spock from starting them again.
CREATE FUNCTION zodan_ci.zodan_stop_statements()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY[
        -- Spock names its sessions <subscription>_<purpose>; pg_restore
        -- runs only while one of this node's subscriptions restores a copy.
        $s$SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend' AND (a.application_name IN (SELECT s.sub_name || '_' || p FROM spock.subscription s CROSS JOIN unnest(ARRAY['copy', 'snap', 'sync']) p) OR (a.application_name = 'pg_restore' AND EXISTS (SELECT 1 FROM spock.local_sync_status WHERE sync_status IN ('i', 's', 'd', 'c'))))$s$,
        $s$SELECT spock.sub_disable(sub_name, false) FROM spock.subscription WHERE sub_enabled$s$,
        $s$DO $stop$
DECLARE
    tries integer := 0;
BEGIN
    LOOP
        -- Identified by what the process is, never by a pid Spock keeps
        -- in shared memory: a dead worker's slot may point at a process
        -- that has nothing to do with it.
        PERFORM pg_cancel_backend(a.pid), pg_terminate_backend(a.pid)
           FROM pg_stat_activity a
          WHERE a.datname = current_database() AND a.backend_type LIKE 'spock apply %'
            AND a.pid <> pg_backend_pid();
        EXIT WHEN NOT FOUND OR tries >= 600;
        PERFORM pg_sleep(0.1);
        tries := tries + 1;
    END LOOP;
END
$stop$$s$
    ];
$fn$;

-- Statements that return a node to a plain database: stop its workers
-- (zodan_stop_statements), drop its subscriptions (and with them their
-- slots on the providers), its node, the other nodes' rows, its origins
-- and its progress records.
CREATE FUNCTION zodan_ci.zodan_reset_statements()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT zodan_ci.zodan_stop_statements() || ARRAY[
        $s$SELECT spock.sub_drop(sub_name, true) FROM spock.subscription$s$,
        $s$SELECT spock.node_drop(n.node_name, true) FROM spock.local_node l JOIN spock.node n ON n.node_id = l.node_id$s$,
        $s$SELECT spock.node_drop(node_name, true) FROM spock.node$s$,
        $s$SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'spk\_%'$s$,
        $s$DO $progress$ BEGIN IF to_regclass('spock.progress') IN (SELECT oid FROM pg_class WHERE relkind = 'r') THEN DELETE FROM spock.progress; END IF; END $progress$$s$
    ];
$fn$;

-- Stops node's workers and drops its subscriptions, which releases the
-- slots they read on their providers.
CREATE FUNCTION zodan_ci.zodan_drop_subscriptions(node text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    stmt text;
BEGIN
    FOREACH stmt IN ARRAY zodan_ci.zodan_stop_statements() LOOP
        PERFORM zodan_ci.zodan_exec(node, stmt);
    END LOOP;
    PERFORM zodan_ci.zodan_exec(node, 'SELECT spock.sub_drop(sub_name, true) FROM spock.subscription');
END;
$fn$;

-- Runs zodan_reset_statements on node and, given a content snapshot of
-- the node's database, drops whatever the copy restored since.
CREATE FUNCTION zodan_ci.zodan_reset_node(ctx jsonb, node text, content jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    stmt text;
    n integer;
BEGIN
    FOREACH stmt IN ARRAY zodan_ci.zodan_reset_statements() LOOP
        PERFORM zodan_ci.zodan_exec(node, stmt);
    END LOOP;
    IF content IS NOT NULL THEN
        n := zodan_ci.zodan_value(node, format('SELECT zodan_ci.zodan_content_reset(%L::jsonb)', content))::integer;
        IF n > 0 THEN
            PERFORM zodan_ci.zodan_detail(ctx, format('dropped %s objects the copy had created on %s', n, node));
        END IF;
    END IF;
END;
$fn$;

-- Formats what could not be cleaned for the DBA: per node, the statements
-- to run there once it is back.
CREATE FUNCTION zodan_ci.zodan_pending_text(pending jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT string_agg(format('on node %s: %s', key,
                             (SELECT string_agg(s || ';', ' ') FROM jsonb_array_elements_text(value) s)),
                      E'\n' ORDER BY key)
      FROM jsonb_each(pending);
$fn$;

-- ---------------------------------------------------------------------------
-- The hand-over: how the new node N stops receiving its peers' changes
-- through the source S and starts receiving them from the peers directly,
-- without missing a transaction, without getting one twice, and without
-- ever applying a change before a change it depends on.
--
-- Until the hand-over, N's subscription from S forwards every origin: N
-- gets each peer P's transactions as S applied them, interleaved with S's
-- own in S's commit order. Whatever S did to a row P had just inserted
-- therefore reaches N after the insert, exactly as it happened on S. (The
-- alternative, applying S's own changes on N while P->N waits disabled,
-- makes N apply S's updates of P's newest rows before the rows exist, and
-- Spock's default exception_behaviour silently discards those
-- transactions.)
--
-- The cut is taken with S's apply workers paused (spock.pause_apply_workers):
-- while paused, S applies nothing from any peer, so the replication origin
-- of S's subscription from P (pg_replication_origin_status, updated in the
-- commit itself) names exactly the last transaction of P that S applied,
-- and every one of them is in S's WAL before a sync event emitted now.
-- Once N has applied that sync event, N has exactly P's transactions up to
-- that position. N's subscription from S is stopped, forwarding switched
-- off, and P->N set to start right after that position: every later
-- transaction of P reaches N from P, once. Spock's own spock.progress row
-- is not used: it is flushed lazily, so it can name an older position than
-- the data already contains (duplicates in tables without a key).
--
-- Spock resumes paused workers on its own after spock.pause_timeout (10 s
-- by default) with a WARNING. The cut therefore re-reads the positions once
-- S->N has stopped: if any moved, the pause did not hold, S->N is started
-- again with forwarding (a state that is always safe) and the cut is
-- retried. After the cut, S stays paused until N's subscriptions from S and
-- from every peer run and have caught up, so that S's changes to a peer's
-- newest rows never overtake those rows on their way to N.
-- ---------------------------------------------------------------------------

-- Where node has applied each of peers' changes: the remote LSN of the
-- replication origin of node's subscription from that peer, by peer name.
-- Exact at any moment the node's apply workers are paused.
CREATE FUNCTION zodan_ci.zodan_applied_positions(node text, peers text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    positions jsonb := '{}'::jsonb;
    p text;
BEGIN
    FOREACH p IN ARRAY peers LOOP
        positions := positions || jsonb_build_object(p, zodan_ci.zodan_value(node, zodan_ci.zodan_applied_probe(p)));
    END LOOP;
    RETURN positions;
END;
$fn$;

-- Turns forwarding of other origins on or off for subscription sub on
-- node, which must be disabled. Spock 6.0 has spock.sub_alter_options for
-- this; Spock 5.0 has no call for it, but its apply worker reads the
-- subscription's row when it starts, so updating the row while the
-- subscription is disabled has the same effect.
CREATE FUNCTION zodan_ci.zodan_set_forwarding(node text, sub text, forward boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF zodan_ci.zodan_value(node, 'SELECT to_regprocedure(''spock.sub_alter_options(name,jsonb)'') IS NOT NULL')::boolean THEN
        PERFORM zodan_ci.zodan_exec(node, format('SELECT spock.sub_alter_options(%L, %L::jsonb)', sub,
            jsonb_build_object('forward_origins', CASE WHEN forward THEN '["all"]'::jsonb ELSE '[]'::jsonb END)));
    ELSE
        PERFORM zodan_ci.zodan_exec(node, format(
            'UPDATE spock.subscription SET sub_forward_origins = %L::text[] WHERE sub_name = %L AND NOT sub_enabled',
            CASE WHEN forward THEN '{all}' END, sub));
    END IF;
    IF zodan_ci.zodan_value(node, format(
        'SELECT coalesce(cardinality(sub_forward_origins), 0) > 0 FROM spock.subscription WHERE sub_name = %L', sub))::boolean
       IS DISTINCT FROM forward THEN
        RAISE EXCEPTION 'could not turn forwarding % for subscription % on node %', CASE WHEN forward THEN 'on' ELSE 'off' END, sub, node
            USING ERRCODE = 'ZDC02';
    END IF;
END;
$fn$;

-- Stops subscription sub on node, whose provider serves it from slot,
-- and leaves it disabled, without losing the transaction its apply worker
-- may be in the middle of.
--
-- spock.sub_disable is not safe for this. It stops the apply worker with
-- SIGTERM, which the worker acts on between two messages, so often inside
-- a transaction; the restarted worker then replays that transaction in
-- exception-handling mode, and Spock 5.0.11 commits such a replay without
-- its rows when nothing in it failed: the transaction is lost, and
-- spock.exception_log records it as discarded (fixed upstream after
-- 5.0.11). A worker that loses its provider connection takes Spock's
-- designed path instead: it aborts what it had begun, forgets it, and its
-- successor applies the transaction again from the start.
--
-- So the provider's walsender is ended, and the subscription disabled, in
-- one transaction on node that holds spock.local_node in SHARE UPDATE
-- EXCLUSIVE mode throughout: Spock's manager takes that lock before it
-- starts or stops any apply worker, so it can neither restart the worker
-- nor stop it with SIGTERM before the worker is gone and the subscription
-- disabled.
CREATE FUNCTION zodan_ci.zodan_stop_subscription(ctx jsonb, node text, sub text, provider text, slot text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    worker text;
    st text; msg text; det text; hnt text;
BEGIN
    -- Spock names an apply worker's process "spock apply <database oid>:<subscription id>".
    worker := zodan_ci.zodan_value(node, format(
        'SELECT format(''spock apply %%s:%%s'', d.oid, s.sub_id) FROM spock.subscription s, pg_database d '
        'WHERE s.sub_name = %L AND d.datname = current_database()', sub));
    IF worker IS NULL THEN
        RAISE EXCEPTION 'subscription % is missing on node %', sub, node USING ERRCODE = 'ZDC02';
    END IF;
    PERFORM zodan_ci.zodan_exec(node, 'BEGIN');
    BEGIN
        PERFORM zodan_ci.zodan_exec(node, 'LOCK TABLE spock.local_node IN SHARE UPDATE EXCLUSIVE MODE');
        PERFORM zodan_ci.zodan_exec(node, format('UPDATE spock.subscription SET sub_enabled = false WHERE sub_name = %L', sub));
        PERFORM zodan_ci.zodan_wait(ctx, format('the apply worker of %s on %s to stop', sub, node),
                                  'zodan_ci.zodan_probe_worker_stopped'::regproc,
                                  jsonb_build_object('node', node, 'worker', worker, 'provider', provider, 'slot', slot),
                                  format('On %s, SELECT active_pid FROM pg_replication_slots WHERE slot_name = %L names the walsender; on %s, pg_stat_activity the process "%s".',
                                         provider, slot, node, worker));
        PERFORM zodan_ci.zodan_exec(node, 'COMMIT');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        -- The subscription stays enabled: its worker restarts and resumes
        -- from its last commit, which is always safe. A node that cannot
        -- be reached rolls the transaction back itself when the connection
        -- goes; the error that matters is the one raised below.
        BEGIN
            PERFORM zodan_ci.zodan_exec(node, 'ROLLBACK');
        EXCEPTION WHEN OTHERS THEN
            PERFORM zodan_ci.zodan_detail(ctx, format('could not roll back the stop of %s on %s: %s', sub, node, SQLERRM));
        END;
        RAISE EXCEPTION '%', msg USING ERRCODE = st, DETAIL = coalesce(det, ''), HINT = coalesce(hnt, '');
    END;
END;
$fn$;

-- Phase 7 of add_node: the hand-over described above. peer_sync holds,
-- per peer, the slot prepared for peer->joiner (phase 3). Returns, per
-- peer, the position its subscription to joiner starts after.
CREATE FUNCTION zodan_ci.zodan_hand_over(ctx jsonb, src text, joiner text, peers text[], peer_sync jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    via text := zodan_ci.zodan_sub_name(src, joiner);
    via_slot text;
    cut jsonb;
    again jsonb;
    ev pg_lsn;
    p text;
    slot text;
    flushed pg_lsn;
    paused_at timestamptz;
    attempt integer := 0;
    -- Spock's pause_timeout bounds a pause; a few attempts ride out a
    -- moment when S's workers could not be paused in time.
    attempts CONSTANT integer := 3;
BEGIN
    via_slot := zodan_ci.zodan_value(joiner, format('SELECT sub_slot_name FROM spock.subscription WHERE sub_name = %L', via));
    IF via_slot IS NULL THEN
        RAISE EXCEPTION 'subscription % is missing on node %', via, joiner USING ERRCODE = 'ZDC02';
    END IF;
    LOOP
        attempt := attempt + 1;
        -- 1. Freeze what S applies from its peers, and read where it is.
        PERFORM zodan_ci.zodan_exec(src, 'SELECT spock.pause_apply_workers()');
        paused_at := clock_timestamp();
        cut := zodan_ci.zodan_applied_positions(src, peers);
        -- 2. Everything S applied up to there reaches joiner, forwarded.
        ev := zodan_ci.zodan_event(src);
        PERFORM zodan_ci.zodan_wait_lsn(ctx, joiner, zodan_ci.zodan_applied_probe(src), ev,
            format('%s to apply %s''s changes up to %s', joiner, src, ev));
        -- 3. Stop the forwarding stream, between two of S's transactions.
        PERFORM zodan_ci.zodan_stop_subscription(ctx, joiner, via, src, via_slot);
        -- 4. If S applied anything since step 1 the pause did not hold and
        --    joiner may have more than cut says: start over from a state
        --    that is safe (forwarding on).
        again := zodan_ci.zodan_applied_positions(src, peers);
        EXIT WHEN again = cut;
        PERFORM zodan_ci.zodan_exec(joiner, format('SELECT spock.sub_enable(%L, true)', via));
        PERFORM zodan_ci.zodan_exec(src, 'SELECT spock.resume_apply_workers()');
        IF attempt >= attempts THEN
            RAISE EXCEPTION 'could not hold %''s apply workers paused while handing % over to its peers (% attempts)', src, joiner, attempts
                USING ERRCODE = 'ZDD02',
                      DETAIL = format('%s applied peers'' changes during the pause: before %s, after %s.', src, cut, again),
                      HINT = format('Spock resumes paused apply workers after spock.pause_timeout; raise it on %s (ALTER SYSTEM SET spock.pause_timeout = 60; SELECT pg_reload_conf()) and CALL add_node again.', src);
        END IF;
        PERFORM zodan_ci.zodan_info(ctx, format('%s resumed its apply workers during the hand-over; trying again (%s of %s)', src, attempt + 1, attempts));
    END LOOP;

    -- 5. Each peer's stream to joiner starts right after the cut.
    FOREACH p IN ARRAY peers LOOP
        slot := peer_sync->p->>'slot';
        IF cut->>p IS NULL THEN
            RAISE EXCEPTION '% has no record of how far it applied %''s changes; refusing to guess where %''s stream to % starts', src, p, p, joiner
                USING ERRCODE = 'ZDD01',
                      HINT = format('Check that %s subscribes to %s and is replicating (SELECT * FROM spock.sub_show_status() on %s), then CALL add_node again.', src, p, src);
        END IF;
        flushed := zodan_ci.zodan_value(p, format('SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %L', slot))::pg_lsn;
        IF flushed IS NULL THEN
            RAISE EXCEPTION 'slot % on % disappeared', slot, p USING ERRCODE = 'ZDC02';
        END IF;
        IF flushed > (cut->>p)::pg_lsn THEN
            RAISE EXCEPTION 'slot % on % starts at %, after the hand-over position %: % changes in between would be lost', slot, p, flushed, cut->>p, p
                USING ERRCODE = 'ZDD01', HINT = 'CALL add_node again.';
        END IF;
        IF flushed < (cut->>p)::pg_lsn THEN
            PERFORM zodan_ci.zodan_exec(p, format('SELECT pg_replication_slot_advance(%L, %L::pg_lsn)', slot, cut->>p));
        END IF;
        PERFORM zodan_ci.zodan_exec(joiner, format('SELECT pg_replication_origin_advance(%L, %L::pg_lsn)', slot, cut->>p));
        PERFORM zodan_ci.zodan_info(ctx, format('%s->%s starts after %s (where %s had applied %s''s changes)', p, joiner, cut->>p, src, p));
    END LOOP;

    -- 6. S's own changes flow again, no longer with the peers' ones; then
    --    the peers' streams start. S is still paused, so nothing S does
    --    yet depends on a peer's change that joiner does not have.
    PERFORM zodan_ci.zodan_set_forwarding(joiner, via, false);
    PERFORM zodan_ci.zodan_exec(joiner, format('SELECT spock.sub_enable(%L, true)', via));
    PERFORM zodan_ci.zodan_sync(ctx, ARRAY[src], ARRAY[joiner]);
    FOREACH p IN ARRAY peers LOOP
        PERFORM zodan_ci.zodan_exec(joiner, format('SELECT spock.sub_enable(%L, true)', zodan_ci.zodan_sub_name(p, joiner)));
    END LOOP;
    PERFORM zodan_ci.zodan_sync(ctx, peers, ARRAY[joiner]);
    PERFORM zodan_ci.zodan_exec(src, 'SELECT spock.resume_apply_workers()');
    PERFORM zodan_ci.zodan_detail(ctx, format('%s''s apply workers were paused for %s', src, zodan_ci.zodan_seconds(paused_at)));
    RETURN cut;
END;
$fn$;

-- ---------------------------------------------------------------------------
-- Comparing a new node with its source: add_node's last phase and
-- health_check('post').
--
-- What it detects:
--   * transactions a node discarded: Spock logs every change it could not
--     apply (and, with the default exception_behaviour 'transdiscard', the
--     rest of its transaction) in spock.exception_log. An entry that
--     appeared during the join means some node differs from the others.
--   * a replicated table with a different number of rows on the new node
--     than on the source, once both have applied every node's changes and
--     neither count moves between two rounds (missing rows, rows applied
--     twice in a table without a key).
-- What it cannot detect: rows with the same count but other values, and a
-- difference in a table that is written throughout (its counts never hold
-- still; it is reported as not compared), or in a table larger than
-- 1073741824 bytes on the source (counting it would take long; also reported as
-- not compared).
-- ---------------------------------------------------------------------------

-- Rows in spock.exception_log on each of nodes, by node name.
CREATE FUNCTION zodan_ci.zodan_exception_counts(nodes text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    counts jsonb := '{}'::jsonb;
    n text;
BEGIN
    FOREACH n IN ARRAY nodes LOOP
        counts := counts || jsonb_build_object(n,
            zodan_ci.zodan_value(n, 'SELECT count(*) FROM spock.exception_log')::bigint);
    END LOOP;
    RETURN counts;
END;
$fn$;

-- Exact row counts of tables on node, by table name, in one statement.
CREATE FUNCTION zodan_ci.zodan_row_counts(node text, tables text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF cardinality(tables) = 0 THEN
        RETURN '{}'::jsonb;
    END IF;
    -- Each name is a regclass text from the node's own catalog, so it is
    -- already a quoted identifier; %L and ::regclass keep it that way.
    RETURN zodan_ci.zodan_value(node, 'SELECT jsonb_build_object(' ||
        (SELECT string_agg(format('%L, (SELECT count(*) FROM %s)', t, t::regclass), ', ')
           FROM unnest(tables) t) || ')')::jsonb;
END;
$fn$;

-- The comparison, as check rows (shaped like zodan_checks'). baseline is zodan_exception_counts of
-- nodes taken before the join (NULL: every entry on new counts). nodes are
-- the cluster's nodes including src and new.
CREATE FUNCTION zodan_ci.zodan_compare(ctx jsonb, src text, new text, nodes text[], baseline jsonb)
RETURNS TABLE (ok boolean, check_name text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    now_counts jsonb;
    grown text[];
    tables text[];
    large text[] := '{}'::text[];
    cn jsonb; cs jsonb; pn jsonb; ps jsonb;
    agreed text[] := '{}'::text[];
    differ text[] := '{}'::text[];
    differing text[] := '{}'::text[];
    t text;
BEGIN
    -- 1. Discarded transactions.
    IF baseline IS NULL THEN
        now_counts := zodan_ci.zodan_exception_counts(ARRAY[new]);
        baseline := jsonb_build_object(new, 0);
    ELSE
        now_counts := zodan_ci.zodan_exception_counts(nodes);
    END IF;
    SELECT array_agg(format('%s has %s new entries', k, (now_counts->>k)::bigint - (baseline->>k)::bigint) ORDER BY k)
      INTO grown
      FROM jsonb_object_keys(baseline) k
     WHERE (now_counts->>k)::bigint > (baseline->>k)::bigint;
    check_name := 'discarded-transactions';
    ok := grown IS NULL;
    detail := CASE WHEN ok THEN format('no new entries in spock.exception_log on %s', array_to_string(ARRAY(SELECT jsonb_object_keys(baseline) ORDER BY 1), ', '))
                   ELSE format('spock.exception_log: %s; those transactions were not applied there, so that node differs (SELECT * FROM spock.exception_log on it says which)',
                               array_to_string(grown, '; ')) END;
    RETURN NEXT;

    -- 2. Row counts of every replicated table, new against src.
    SELECT array_agg(DISTINCT format('%I.%I', j->>'nspname', j->>'relname'))
      INTO tables
      FROM zodan_ci.zodan_query(new, 'SELECT nspname, relname FROM spock.tables WHERE set_name IS NOT NULL') j;
    tables := coalesce(tables, '{}'::text[]);
    IF cardinality(tables) > 0 THEN
        SELECT array_agg(j->>'t') INTO large
          FROM zodan_ci.zodan_query(src, format(
              'SELECT t FROM unnest(%L::text[]) t WHERE to_regclass(t) IS NOT NULL AND pg_total_relation_size(to_regclass(t)) > 1073741824', tables)) j;
        large := coalesce(large, '{}'::text[]);
        tables := ARRAY(SELECT x FROM unnest(tables) x WHERE x <> ALL (large) ORDER BY x);
    END IF;
    -- Two rounds: a table whose counts differ in both is a difference if
    -- neither count moved across the second round's full sync, and is
    -- written throughout if one did (a third round would only find it
    -- moving again, at the price of another sync of the whole cluster).
    FOR round IN 1..2 LOOP
        EXIT WHEN cardinality(tables) = 0;
        -- Both have applied everything every node committed before now.
        PERFORM zodan_ci.zodan_sync(ctx, nodes, ARRAY[src, new]);
        cn := zodan_ci.zodan_row_counts(new, tables);
        cs := zodan_ci.zodan_row_counts(src, tables);
        FOREACH t IN ARRAY tables LOOP
            IF cn->t = cs->t THEN
                agreed := agreed || t;
            ELSIF round > 1 AND cn->t = pn->t AND cs->t = ps->t THEN
                -- Neither moved across a full sync: a real difference.
                differ := differ || format('%s has %s rows on %s and %s on %s', t, cn->>t, new, cs->>t, src);
                differing := differing || t;
            END IF;
        END LOOP;
        tables := ARRAY(SELECT x FROM unnest(tables) x WHERE x <> ALL (agreed || differing) ORDER BY x);
        pn := cn; ps := cs;
    END LOOP;
    check_name := 'row-counts';
    ok := cardinality(differ) = 0;
    detail := CASE WHEN ok THEN concat_ws('; ',
                    format('%s tables have as many rows on %s as on %s', cardinality(agreed), new, src),
                    CASE WHEN cardinality(tables) > 0 THEN format('not compared, written throughout: %s', array_to_string(tables, ', ')) END,
                    CASE WHEN cardinality(large) > 0 THEN format('not compared, larger than %s: %s', pg_size_pretty(1073741824::bigint), array_to_string(large, ', ')) END)
                   ELSE array_to_string(differ, '; ') END;
    RETURN NEXT;
END;
$fn$;

-- ---------------------------------------------------------------------------
-- health_check: is the cluster ready for add_node ('pre'), or did a node
-- join properly ('post')? Runs on any node; changes nothing.
-- ---------------------------------------------------------------------------

-- Connects to the source, to every node the source knows and to the new
-- node, and collects what the checks need. With lock, takes the cluster
-- lock on each node as it connects (add_node). Nodes that cannot be
-- reached are reported, not fatal: the caller decides.
-- Returns {members: [names], peers: {name: dsn}, facts: {name: facts},
-- unreachable: {name: reason}}.
CREATE FUNCTION zodan_ci.zodan_gather(ctx jsonb, src text, src_dsn text, new text, new_dsn text, lock boolean)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    members text[] := '{}'::text[];
    peers jsonb := '{}'::jsonb;
    facts jsonb := '{}'::jsonb;
    unreachable jsonb := '{}'::jsonb;
    r record;
    local_node text := ctx->>'local';
BEGIN
    BEGIN
        IF src IS DISTINCT FROM local_node THEN
            IF lock THEN
                PERFORM zodan_ci.zodan_join(ctx, src, src_dsn);
            ELSE
                PERFORM zodan_ci.zodan_connect(src, src_dsn, coalesce(ctx->>'app', 'zodan health_check'), (ctx->>'timeout')::integer);
            END IF;
        END IF;
        facts := jsonb_build_object(src, zodan_ci.zodan_facts(src));
    EXCEPTION WHEN lock_not_available THEN
        RAISE;
    WHEN OTHERS THEN
        IF lock THEN
            RAISE;
        END IF;
        unreachable := jsonb_build_object(src, zodan_ci.zodan_redact(SQLERRM));
        RETURN jsonb_build_object('members', '[]'::jsonb, 'peers', peers, 'facts', facts, 'unreachable', unreachable);
    END;

    IF facts->src->>'spock' IS NOT NULL THEN
        FOR r IN SELECT * FROM zodan_ci.zodan_cluster_nodes(src) LOOP
            members := members || r.name;
            CONTINUE WHEN r.name = src OR r.name = new;
            peers := peers || jsonb_build_object(r.name, r.dsn);
            BEGIN
                IF lock THEN
                    PERFORM zodan_ci.zodan_join(ctx, r.name, r.dsn);
                ELSE
                    PERFORM zodan_ci.zodan_connect(r.name, r.dsn, coalesce(ctx->>'app', 'zodan health_check'), (ctx->>'timeout')::integer);
                END IF;
                facts := facts || jsonb_build_object(r.name, zodan_ci.zodan_facts(r.name));
            EXCEPTION WHEN lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                unreachable := unreachable || jsonb_build_object(r.name, zodan_ci.zodan_redact(SQLERRM));
            END;
        END LOOP;
    END IF;

    IF new IS NOT NULL AND new_dsn IS NOT NULL THEN
        BEGIN
            IF new IS DISTINCT FROM local_node THEN
                PERFORM zodan_ci.zodan_connect(new, new_dsn, coalesce(ctx->>'app', 'zodan health_check'), (ctx->>'timeout')::integer);
            END IF;
            facts := facts || jsonb_build_object(new, zodan_ci.zodan_facts(new));
        EXCEPTION WHEN OTHERS THEN
            IF lock THEN
                RAISE;
            END IF;
            unreachable := unreachable || jsonb_build_object(new, zodan_ci.zodan_redact(SQLERRM));
        END;
    END IF;

    RETURN jsonb_build_object('members', to_jsonb(members), 'peers', peers,
                              'facts', zodan_ci.zodan_correct_sub_status(facts), 'unreachable', unreachable);
END;
$fn$;

CREATE PROCEDURE zodan_ci.health_check(
    src_node_name text,
    src_dsn text,
    new_node_name text DEFAULT NULL,
    new_node_dsn text DEFAULT NULL,
    check_type text DEFAULT 'pre',
    verb boolean DEFAULT false,
    sync_timeout interval DEFAULT NULL)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $proc$
DECLARE
    kind text := lower(btrim(coalesce(check_type, '')));
    ctx jsonb;
    cluster jsonb;
    c record;
    passed integer := 0;
    failed text[] := '{}'::text[];
    compare_new boolean;
    st text; msg text; det text; hnt text;
BEGIN
    -- Nothing this CALL runs is logged with its text or parameters: they
    -- carry DSNs.
    PERFORM zodan_ci.zodan_prepare_session();
    PERFORM zodan_ci.zodan_require_dblink();

    IF kind NOT IN ('pre', 'post') THEN
        RAISE EXCEPTION 'check_type must be ''pre'' or ''post'', not %', quote_literal(check_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '''pre'' checks that the cluster is ready for add_node; ''post'' checks that a node joined properly.';
    END IF;
    IF src_node_name IS NULL OR src_dsn IS NULL THEN
        RAISE EXCEPTION 'src_node_name and src_dsn are required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (new_node_name IS NULL) <> (new_node_dsn IS NULL) THEN
        RAISE EXCEPTION 'give both new_node_name and new_node_dsn, or neither'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    ctx := jsonb_build_object('kind', 'health_check', 'target', coalesce(new_node_name, src_node_name),
                              'verbose', coalesce(verb, false), 'timeout', zodan_ci.zodan_sync_timeout(sync_timeout),
                              'app', 'zodan health_check');
    PERFORM zodan_ci.zodan_disconnect_all();
    PERFORM zodan_ci.zodan_say(ctx, 'ZD006', format('%s-check of %s', kind,
        CASE WHEN new_node_name IS NULL THEN format('the cluster of %s', src_node_name)
             ELSE format('node %s with source %s', new_node_name, src_node_name) END));

    cluster := zodan_ci.zodan_gather(ctx, src_node_name, src_dsn, new_node_name, new_node_dsn, false);
    IF kind = 'pre' AND new_node_name IS NOT NULL AND cluster->'facts' ? new_node_name
       AND cluster->'unreachable' = '{}'::jsonb THEN
        cluster := jsonb_set(cluster, ARRAY['facts', new_node_name],
            (cluster->'facts'->new_node_name)
            || jsonb_build_object('links', zodan_ci.zodan_links(src_node_name, src_dsn, new_node_name, new_node_dsn, cluster->'peers')));
    END IF;
    -- A node that joined must also hold what its source holds: 'post'
    -- adds the comparison (not run at all when compare_new is false).
    compare_new := kind = 'post' AND new_node_name IS NOT NULL AND cluster->'unreachable' = '{}'::jsonb
                   AND new_node_name IN (SELECT jsonb_array_elements_text(cluster->'members'));
    FOR c IN SELECT * FROM zodan_ci.zodan_checks(kind, src_node_name, new_node_name,
                                               ARRAY(SELECT jsonb_array_elements_text(cluster->'members')),
                                               cluster->'facts', cluster->'unreachable')
             UNION ALL
             SELECT * FROM zodan_ci.zodan_compare(ctx, src_node_name, new_node_name,
                                                ARRAY(SELECT jsonb_array_elements_text(cluster->'members')), NULL)
              WHERE compare_new
    LOOP
        IF c.ok THEN
            passed := passed + 1;
            PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('PASS %s: %s', c.check_name, c.detail));
        ELSE
            failed := failed || format('%s: %s', c.check_name, c.detail);
            PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('FAIL %s: %s', c.check_name, c.detail));
        END IF;
    END LOOP;
    PERFORM zodan_ci.zodan_disconnect_all();

    IF cardinality(failed) > 0 THEN
        RAISE EXCEPTION 'health check failed: % of % checks failed', cardinality(failed), cardinality(failed) + passed
            USING ERRCODE = 'ZDH01',
                  DETAIL = array_to_string(failed, E'\n'),
                  HINT = 'Fix what the FAIL lines name, then run the check again.';
    END IF;
    PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('health check passed: %s checks', passed));
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM zodan_ci.zodan_op_fail(ctx, st, msg, det, hnt);
END;
$proc$;

COMMENT ON PROCEDURE zodan_ci.health_check(text, text, text, text, text, boolean, interval) IS
    'zodan: checks that a cluster is ready for add_node (check_type ''pre'') or that a node joined properly (''post''); raises SQLSTATE ZDH01 listing the failed checks';

-- ---------------------------------------------------------------------------
-- add_node: joins the database it runs in to the cluster of the source
-- node, without stopping writes on any node and without losing a row.
--
-- Run it on the new node N. With S the source and P1..Pk the cluster's
-- other nodes:
--   1 checks         the 'pre' health checks; takes the cluster lock
--   2 register       Spock node rows for N (and S, for a one-node start)
--   3 prepare-peers  for each P: a slot on P for P->N, then wait until S
--                    has applied P's changes past it, then P->N disabled
--   4 copy           S->N with schema and data (one snapshot of S), also
--                    forwarding the peers' changes S applies
--   5 catch-up       N applies what S committed and forwarded meanwhile
--   6 replication-sets  N gets S's sets, tables and sequences
--   7 hand-over      with S's apply paused: cut the forwarded stream where
--                    S is with each P, start every P->N right after it
--   8 subscribe      N->X on every existing node X
--   9 verify         changes flow both ways; every subscription replicates
--  10 compare        no node discarded a transaction; N has S's row counts
--
-- Why nothing is lost, nothing arrives twice, and nothing arrives before
-- what it depends on: until the hand-over N receives every peer's changes
-- through S, in the order S applied them (see handover.sql.tmpl); the
-- hand-over takes an exact cut (S's replication origins, read while S's
-- apply workers are paused) and starts each P->N right after it. Every
-- commit of P is either before the cut, and so in the copy or forwarded
-- by S, or after it, and so sent by P; never both.
--
-- Any failure rolls the join back on every reachable node (see
-- cleanup.sql.tmpl) and names what could not be undone; the same CALL can
-- then simply be repeated.
-- ---------------------------------------------------------------------------

CREATE PROCEDURE zodan_ci.add_node(
    src_node_name text,
    src_dsn text,
    new_node_name text,
    new_node_dsn text,
    verb boolean DEFAULT false,
    new_node_location text DEFAULT 'NY',
    new_node_country text DEFAULT 'USA',
    new_node_info jsonb DEFAULT '{}',
    sync_timeout interval DEFAULT NULL)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $proc$
DECLARE
    ctx jsonb;
    st text; msg text; det text; hnt text;
BEGIN
    -- Nothing this CALL runs is logged with its text or parameters: they
    -- carry DSNs.
    PERFORM zodan_ci.zodan_prepare_session();
    PERFORM zodan_ci.zodan_require_dblink();

    IF src_node_name IS NULL OR src_dsn IS NULL OR new_node_name IS NULL OR new_node_dsn IS NULL THEN
        RAISE EXCEPTION 'src_node_name, src_dsn, new_node_name and new_node_dsn are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF src_node_name = new_node_name THEN
        RAISE EXCEPTION 'the new node cannot have the source node''s name (%)', src_node_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF new_node_info IS NOT NULL AND jsonb_typeof(new_node_info) <> 'object' THEN
        RAISE EXCEPTION 'new_node_info must be a JSON object, not %', jsonb_typeof(new_node_info)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    ctx := zodan_ci.zodan_op_context('add_node', new_node_name, new_node_name, verb, sync_timeout,
        ARRAY['checks', 'register', 'prepare-peers', 'copy', 'catch-up', 'replication-sets',
              'hand-over', 'subscribe', 'verify', 'compare'],
        jsonb_build_object('src', src_node_name,
                           'location', new_node_location, 'country', new_node_country,
                           'info', coalesce(new_node_info, '{}'::jsonb),
                           'dsns', jsonb_build_object(src_node_name, src_dsn, new_node_name, new_node_dsn)));
    BEGIN
        ctx := zodan_ci.zodan_op_begin(ctx, src_node_name,
                                     jsonb_build_object('location', new_node_location, 'country', new_node_country));
        ctx := zodan_ci.zodan_add_node_checks(ctx);
        ctx := zodan_ci.zodan_add_node_register(ctx);
        ctx := zodan_ci.zodan_add_node_prepare_peers(ctx);
        ctx := zodan_ci.zodan_add_node_copy(ctx);
        ctx := zodan_ci.zodan_add_node_catch_up(ctx);
        ctx := zodan_ci.zodan_add_node_replication_sets(ctx);
        ctx := zodan_ci.zodan_add_node_hand_over(ctx);
        ctx := zodan_ci.zodan_add_node_subscribe(ctx);
        ctx := zodan_ci.zodan_add_node_verify(ctx);
        ctx := zodan_ci.zodan_add_node_compare(ctx);
        PERFORM zodan_ci.zodan_op_succeeded(ctx, src_node_name, zodan_ci.zodan_add_node_nodes(ctx), NULL,
                                          format('%s joined the cluster', new_node_name));
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM zodan_ci.zodan_op_fail(ctx, st, msg, det, hnt);
    END;
    PERFORM zodan_ci.zodan_disconnect_all();
END;
$proc$;

COMMENT ON PROCEDURE zodan_ci.add_node(text, text, text, text, boolean, text, text, jsonb, interval) IS
    'zodan: joins this database to the cluster of src_node_name without stopping writes; run it on the new node. Rolls back on failure.';

-- The phases of add_node, in order. Each takes the operation's context
-- and returns it with what later phases need; ctx->>'src' is the source S,
-- ctx->>'target' the new node N, and after the checks ctx->'peers' lists
-- the cluster's other nodes P.

-- Every node of the cluster once N has joined: S, its peers, N.
CREATE FUNCTION zodan_ci.zodan_add_node_nodes(ctx jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY[ctx->>'src'] || ARRAY(SELECT jsonb_array_elements_text(coalesce(ctx->'peers', '[]'))) || ARRAY[ctx->>'target'];
$fn$;

-- Runs the checks of check_type on what zodan_gather collected and says
-- each result (PASS as verbose detail), leaving out those named in
-- deferred. Returns the failures.
CREATE FUNCTION zodan_ci.zodan_run_checks(ctx jsonb, check_type text, src text, new text, cluster jsonb, deferred text[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    failed text[] := '{}'::text[];
BEGIN
    FOR r IN SELECT * FROM zodan_ci.zodan_checks(check_type, src, new,
                                               ARRAY(SELECT jsonb_array_elements_text(cluster->'members')),
                                               cluster->'facts', cluster->'unreachable') c
              WHERE c.check_name <> ALL (deferred)
    LOOP
        IF r.ok THEN
            PERFORM zodan_ci.zodan_detail(ctx, format('PASS %s: %s', r.check_name, r.detail));
        ELSE
            failed := failed || format('%s: %s', r.check_name, r.detail);
            PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('FAIL %s: %s', r.check_name, r.detail));
        END IF;
    END LOOP;
    RETURN failed;
END;
$fn$;

-- Whether node is a working member of the cluster zodan_gather saw: it is
-- a Spock node, every subscription it has replicates, and every other
-- reachable node replicates from it. Such a node is never detached by a
-- cleanup, whatever the journal says about how its join ended.
CREATE FUNCTION zodan_ci.zodan_is_working_node(node text, here text, cluster jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    -- here: the name this database's facts are filed under.
    SELECT cluster->'facts'->here->>'local_node' = node
       AND jsonb_array_length(coalesce(cluster->'facts'->here->'subscriptions', '[]')) > 0
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(cluster->'facts'->here->'subscriptions') s
                        WHERE s->>'status' IS DISTINCT FROM 'replicating')
       AND NOT EXISTS (SELECT 1 FROM jsonb_each(cluster->'facts') f
                        WHERE f.key NOT IN (node, here)
                          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(f.value->'subscriptions', '[]')) s
                                           WHERE s->>'provider' = node AND s->>'status' = 'replicating'));
$fn$;

-- Cleans up after the operations this node's journal owes a cleanup (see
-- zodan_interrupted), each with what it recorded: its own node, source,
-- cluster and whether it registered its source, not this call's
-- arguments. Runs once the checks that leftovers cannot fail have passed.
-- Returns whether anything was cleaned.
CREATE FUNCTION zodan_ci.zodan_add_node_clean_owed(ctx jsonb, cluster jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    prev jsonb;
    node text;
    rsrc text;
    nodes text[];
    pending jsonb;
    cleaned boolean := false;
BEGIN
    FOR prev IN SELECT * FROM zodan_ci.zodan_interrupted(ctx) LOOP
        PERFORM zodan_ci.zodan_info(ctx, format('cleaning up after %s of %s (op %s, started %s), %s in phase %s',
            prev->>'kind', prev->>'node_name', prev->>'op_id', prev->>'started_at', prev->>'state',
            coalesce(prev->>'phase', 'unknown')));
        IF prev->>'kind' = 'add_node' THEN
            -- add_node runs on the node it adds: that was this database.
            node := prev->>'node_name';
            IF zodan_ci.zodan_is_working_node(node, ctx->>'target', cluster) THEN
                RAISE EXCEPTION 'this database is node %, a working member of the cluster, although add_node op % of it did not finish (%, in phase %)',
                                node, prev->>'op_id', prev->>'state', coalesce(prev->>'phase', 'unknown')
                    USING ERRCODE = 'ZDC05',
                          DETAIL = 'Every subscription to and from it replicates; zodan never detaches a working node to clean up after it.',
                          HINT = format('Check it with CALL zodan_ci.health_check(%L, <dsn>, %L, <dsn>, ''post''). To add this database under another name, first CALL zodan_ci.remove_node(%L).',
                                        coalesce(prev->>'source_node', ctx->>'src'), node, node);
            END IF;
            rsrc := coalesce(prev->>'source_node', ctx->>'src');
            nodes := ARRAY(SELECT DISTINCT x FROM unnest(
                         ARRAY[rsrc]
                         || ARRAY(SELECT jsonb_array_elements_text(coalesce(prev->'details'->'peers', '[]')))
                         || ARRAY(SELECT jsonb_array_elements_text(cluster->'members'))) x
                      WHERE x <> node ORDER BY 1);
            pending := zodan_ci.zodan_undo_join(ctx, node, rsrc, nodes, ctx->'dsns',
                coalesce((prev->'details'->>'source_registered')::boolean, false),
                prev->'details'->'content');
            IF pending <> '{}'::jsonb THEN
                RAISE EXCEPTION 'could not clean up after the interrupted add_node of % (op %)', node, prev->>'op_id'
                    USING ERRCODE = 'ZDC05', DETAIL = zodan_ci.zodan_pending_text(pending),
                          HINT = 'Bring those nodes back (or run the statements there) and CALL add_node again.';
            END IF;
            PERFORM zodan_ci.zodan_close_interrupted(ctx, (prev->>'op_id')::bigint,
                format('Cleaned up by op %s.', ctx->>'op'));
            cleaned := true;
        ELSE
            -- remove_node is idempotent: a rerun finishes it.
            PERFORM zodan_ci.zodan_close_interrupted(ctx, (prev->>'op_id')::bigint,
                format('Closed by op %s; CALL zodan_ci.remove_node(%L) again if the node is still in the cluster.',
                       ctx->>'op', prev->>'node_name'));
        END IF;
    END LOOP;
    RETURN cleaned;
END;
$fn$;

-- Phase 1: the cluster lock on every node, the 'pre' checks, and, if an
-- earlier attempt left work behind, its cleanup in between.
CREATE FUNCTION zodan_ci.zodan_add_node_checks(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := ctx->>'src';
    joiner text := ctx->>'target';
    cluster jsonb;
    nf jsonb;
    peers text[];
    failed text[];
    node text;
    -- Checks that the leftovers of an unfinished join of this database
    -- fail by themselves; with a cleanup owed they wait until after it.
    leftovers CONSTANT text[] := ARRAY['subscriptions', 'new-node-name', 'new-node-empty', 'existing-schemas',
                                       'replication-slots', 'slot-names', 'lolor'];
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'checks', format('cluster of %s, new node %s', src, joiner));
    cluster := zodan_ci.zodan_gather(ctx, src, ctx->'dsns'->>src, joiner, ctx->'dsns'->>joiner, true);
    IF cluster->'unreachable' <> '{}'::jsonb THEN
        RAISE EXCEPTION 'cannot reach %', (SELECT string_agg(format('node %s (%s)', key, value #>> '{}'), ', ')
                                            FROM jsonb_each(cluster->'unreachable'))
            USING ERRCODE = 'ZDC01',
                  HINT = 'Every node of the cluster must be reachable from the new node; start it, or remove it from the cluster first.';
    END IF;
    peers := ARRAY(SELECT jsonb_object_keys(cluster->'peers') ORDER BY 1);
    ctx := ctx || jsonb_build_object('peers', to_jsonb(peers), 'dsns', (ctx->'dsns') || (cluster->'peers'));
    PERFORM zodan_ci.zodan_detail(ctx, format('cluster seen from %s: %s', src, array_to_string(src || peers, ', ')));

    -- An earlier add_node that died without cleaning up (a crash, a killed
    -- session) left its objects behind. Only a cluster that passes every
    -- check those objects cannot fail is touched; then they are undone,
    -- so that simply retrying works, and the rest is checked.
    IF EXISTS (SELECT 1 FROM zodan_ci.zodan_interrupted(ctx)) THEN
        failed := zodan_ci.zodan_run_checks(ctx, 'add_node', src, joiner, cluster, leftovers);
        IF cardinality(failed) > 0 THEN
            RAISE EXCEPTION 'add_node cannot start: % failed', array_to_string(failed, '; ')
                USING ERRCODE = 'ZDC01',
                      HINT = 'Fix the failed checks and CALL add_node again; it cleans up after the earlier attempt once they pass.';
        END IF;
        IF zodan_ci.zodan_add_node_clean_owed(ctx, cluster) THEN
            -- The cleanup changed the cluster's node lists and emptied
            -- this database again: read them afresh.
            cluster := jsonb_set(cluster, '{members}', to_jsonb(ARRAY(SELECT name FROM zodan_ci.zodan_cluster_nodes(src))));
            FOR node IN SELECT jsonb_object_keys(cluster->'facts') LOOP
                cluster := jsonb_set(cluster, ARRAY['facts', node], zodan_ci.zodan_facts(node));
            END LOOP;
        END IF;
    END IF;

    nf := (cluster->'facts'->joiner)
          || jsonb_build_object('links', zodan_ci.zodan_links(src, ctx->'dsns'->>src, joiner, ctx->'dsns'->>joiner, cluster->'peers'));
    cluster := jsonb_set(cluster, ARRAY['facts', joiner], nf);
    failed := zodan_ci.zodan_run_checks(ctx, 'add_node', src, joiner, cluster, '{}');
    IF cardinality(failed) > 0 THEN
        RAISE EXCEPTION 'add_node cannot start: % failed', array_to_string(failed, '; ')
            USING ERRCODE = 'ZDC01',
                  HINT = format('Fix the failed checks and CALL add_node again; CALL zodan_ci.health_check(%L, <src_dsn>, %L, <new_node_dsn>) repeats them without changing anything.', src, joiner);
    END IF;

    ctx := ctx || jsonb_build_object(
        'new_db', nf->>'db',
        -- Schemas the new node has of its own, which the copy leaves alone.
        'own_schemas', coalesce(nf->'user_schemas', '[]'::jsonb),
        'source_registered', cluster->'facts'->src->>'local_node' IS NULL,
        -- What every node's spock.exception_log holds before the join:
        -- the compare phase fails the join if any of them grew.
        'discarded', zodan_ci.zodan_exception_counts(zodan_ci.zodan_add_node_nodes(ctx)));
    -- Recorded before anything is created, so that a rollback (or the
    -- next attempt after a crash) knows what to undo.
    PERFORM zodan_ci.zodan_op_note(ctx, jsonb_build_object(
        'new_db', ctx->>'new_db', 'peers', to_jsonb(peers), 'source_registered', (ctx->>'source_registered')::boolean,
        'content', zodan_ci.zodan_value(joiner, 'SELECT zodan_ci.zodan_content_snapshot()')::jsonb));
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 2: Spock node rows for N, and for S when S is not a node yet (a
-- cluster of one plain database).
CREATE FUNCTION zodan_ci.zodan_add_node_register(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := ctx->>'src';
    joiner text := ctx->>'target';
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'register', format('Spock node %s%s', joiner,
        CASE WHEN (ctx->>'source_registered')::boolean THEN format(' and source node %s', src) ELSE '' END));
    IF (ctx->>'source_registered')::boolean THEN
        PERFORM zodan_ci.zodan_exec_secret(src, format('SELECT spock.node_create(node_name := %L, dsn := %L)', src, ctx->'dsns'->>src));
        PERFORM zodan_ci.zodan_exec(src, zodan_ci.zodan_default_repsets_sql());
        PERFORM zodan_ci.zodan_info(ctx, format('registered %s as a Spock node; its %s tables and sequences are in the default replication sets',
            src, zodan_ci.zodan_value(src, 'SELECT (SELECT count(*) FROM spock.replication_set_table) + (SELECT count(*) FROM spock.replication_set_seq)')));
    END IF;
    PERFORM zodan_ci.zodan_exec_secret(joiner, format(
        'SELECT spock.node_create(node_name := %L, dsn := %L, location := %L, country := %L, info := %L::jsonb)',
        joiner, ctx->'dsns'->>joiner, ctx->>'location', ctx->>'country', ctx->'info'));
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 3: for each peer P, a slot on P for P->N, then S applies P's
-- changes past it, then P->N is created disabled. Returns ctx with
-- 'peer_sync': per peer, the slot and its position.
CREATE FUNCTION zodan_ci.zodan_add_node_prepare_peers(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := ctx->>'src';
    joiner text := ctx->>'target';
    peers text[] := ARRAY(SELECT jsonb_array_elements_text(ctx->'peers'));
    p text;
    slot text;
    slot_lsn pg_lsn;
    sync_lsn pg_lsn;
    peer_sync jsonb := '{}'::jsonb;
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'prepare-peers',
        CASE WHEN cardinality(peers) = 0 THEN 'no other nodes'
             ELSE format('slots and disabled subscriptions for %s', array_to_string(peers, ', ')) END);
    -- All slots and sync events first, so that the waits overlap.
    FOREACH p IN ARRAY peers LOOP
        slot := spock.spock_gen_slot_name((ctx->>'new_db')::name, p::name, zodan_ci.zodan_sub_name(p, joiner)::name);
        IF zodan_ci.zodan_value(p, format('SELECT count(*) FROM pg_replication_slots WHERE slot_name = %L', slot))::integer > 0 THEN
            -- Nothing can use it yet: joiner is not a node until now.
            PERFORM zodan_ci.zodan_exec(p, format('SELECT pg_drop_replication_slot(%L)', slot));
            PERFORM zodan_ci.zodan_info(ctx, format('dropped leftover slot %s on %s', slot, p));
        END IF;
        -- The slot is made as Spock makes its own on that node: with
        -- failover on PostgreSQL 17+, where Spock 6.0 always asks for
        -- it and Spock 5.0 when spock.use_native_failover_slots is on
        -- (the setting exists only in 5.0). Decided per peer: a
        -- cluster in a rolling upgrade mixes versions.
        slot_lsn := zodan_ci.zodan_value(p, format(
            CASE WHEN zodan_ci.zodan_value(p, 'SHOW server_version_num')::integer >= 170000 THEN
                'SELECT lsn FROM pg_create_logical_replication_slot(%L, %L, false, false,
                        coalesce(current_setting(''spock.use_native_failover_slots'', true), ''on'')::boolean)'
            ELSE 'SELECT lsn FROM pg_create_logical_replication_slot(%L, %L)' END,
            slot, 'spock_output'))::pg_lsn;
        -- An event on p after the slot, which src must have passed (so
        -- applied all p committed up to the slot) before the copy's
        -- snapshot is taken.
        sync_lsn := zodan_ci.zodan_event(p);
        peer_sync := peer_sync || jsonb_build_object(p, jsonb_build_object('slot', slot, 'slot_lsn', slot_lsn, 'sync_lsn', sync_lsn));
    END LOOP;
    FOREACH p IN ARRAY peers LOOP
        PERFORM zodan_ci.zodan_wait_lsn(ctx, src, zodan_ci.zodan_applied_probe(p), (peer_sync->p->>'sync_lsn')::pg_lsn,
            format('%s to apply %s''s changes up to %s', src, p, peer_sync->p->>'sync_lsn'));
        PERFORM zodan_ci.zodan_exec_secret(joiner, format(
            'SELECT spock.sub_create(subscription_name := %L, provider_dsn := %L,
                    replication_sets := %L::text[], synchronize_structure := false,
                    synchronize_data := false, forward_origins := ''{}'', apply_delay := ''0'',
                    enabled := false)',
            zodan_ci.zodan_sub_name(p, joiner), ctx->'dsns'->>p,
            (SELECT array_agg(s->>'name') FROM jsonb_array_elements(zodan_ci.zodan_repset_spec(p)->'sets') s)));
        PERFORM zodan_ci.zodan_info(ctx, format('%s: slot %s at %s, %s caught up to %s, %s created disabled',
            p, peer_sync->p->>'slot', peer_sync->p->>'slot_lsn', src, peer_sync->p->>'sync_lsn', zodan_ci.zodan_sub_name(p, joiner)));
    END LOOP;
    ctx := ctx || jsonb_build_object('peer_sync', peer_sync);
    RETURN zodan_ci.zodan_phase_done(ctx, CASE WHEN cardinality(peers) = 0 THEN 'skipped' ELSE 'done' END);
END;
$fn$;

-- Phase 4: S->N with schema and data (one snapshot of S). With peers, S
-- forwards their changes until the hand-over, so that N applies them in
-- S's order, before S's own changes that build on them.
CREATE FUNCTION zodan_ci.zodan_add_node_copy(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := ctx->>'src';
    joiner text := ctx->>'target';
    peers text[] := ARRAY(SELECT jsonb_array_elements_text(ctx->'peers'));
    skip text[] := ARRAY(SELECT jsonb_array_elements_text(ctx->'own_schemas'));
BEGIN
    -- Procedures installed outside the spock schema (tests of the
    -- installer) live in a schema of the new node's own.
    IF 'zodan_ci' <> 'spock' THEN
        skip := skip || 'zodan_ci'::text;
    END IF;
    ctx := zodan_ci.zodan_phase_begin(ctx, 'copy', format('schema and data from %s%s%s', src,
        CASE WHEN cardinality(peers) > 0 THEN format(', with %s''s changes as %s applies them', array_to_string(peers, ', '), src) ELSE '' END,
        CASE WHEN cardinality(skip) > 0 THEN format(' (keeping %s''s own schemas %s)', joiner, array_to_string(skip, ', ')) ELSE '' END));
    PERFORM zodan_ci.zodan_exec_secret(joiner, format(
        'SELECT spock.sub_create(subscription_name := %L, provider_dsn := %L,
                replication_sets := %L::text[], synchronize_structure := true,
                synchronize_data := true, forward_origins := %L::text[], apply_delay := ''0'',
                enabled := true, skip_schema := %L::text[])',
        zodan_ci.zodan_sub_name(src, joiner), ctx->'dsns'->>src,
        (SELECT array_agg(s->>'name') FROM jsonb_array_elements(zodan_ci.zodan_repset_spec(src)->'sets') s),
        CASE WHEN cardinality(peers) > 0 THEN '{all}' ELSE '{}' END,
        skip));
    PERFORM zodan_ci.zodan_wait_copy(ctx, joiner, zodan_ci.zodan_sub_name(src, joiner), src);
    PERFORM zodan_ci.zodan_info(ctx, format('copied %s tables from %s',
        zodan_ci.zodan_value(joiner, 'SELECT count(*) FROM spock.tables WHERE set_name IS NOT NULL'), src));
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 5: N applies what S committed (and forwarded) during the copy.
CREATE FUNCTION zodan_ci.zodan_add_node_catch_up(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'catch-up', format('%s applies what %s committed during the copy', ctx->>'target', ctx->>'src'));
    PERFORM zodan_ci.zodan_sync(ctx, ARRAY[ctx->>'src'], ARRAY[ctx->>'target']);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 6: N gets S's replication sets, their tables and sequences.
-- Before the hand-over: every Spock call on N waits while N's Spock
-- manager starts an apply worker (it holds spock.local_node until the
-- worker has attached, up to a second), and N's manager is busy just
-- after the copy and just after the hand-over. Here that wait falls
-- before S's apply workers are paused rather than inside the pause, and
-- the phase after the hand-over no longer has to wait for N.
CREATE FUNCTION zodan_ci.zodan_add_node_replication_sets(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src text := ctx->>'src';
    joiner text := ctx->>'target';
    spec jsonb;
    diff text[];
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'replication-sets', format('%s gets %s''s replication sets', joiner, src));
    spec := zodan_ci.zodan_repset_spec(src);
    PERFORM zodan_ci.zodan_info(ctx, zodan_ci.zodan_value(joiner, format('SELECT zodan_ci.zodan_apply_repsets(%L::jsonb)', spec)));
    -- The copy carries tables, not sequence positions: Spock sends a
    -- sequence's position only when it has moved far enough. Have the
    -- source send each one now; the verify phase's sync events wait for
    -- them.
    PERFORM zodan_ci.zodan_exec(src, format('SELECT spock.sync_seq(%s::regclass)', quote_literal(q->>'relation')))
       FROM jsonb_array_elements(spec->'sequences') q;
    -- The source may have changed while we copied; say exactly what.
    SELECT array_agg(d ORDER BY d) INTO diff FROM (
        (SELECT 'only on ' || src || ': ' || e FROM zodan_ci.zodan_repset_entries(zodan_ci.zodan_repset_spec(src)) e
         EXCEPT SELECT 'only on ' || src || ': ' || e FROM zodan_ci.zodan_repset_entries(zodan_ci.zodan_repset_spec(joiner)) e)
        UNION ALL
        (SELECT 'only on ' || joiner || ': ' || e FROM zodan_ci.zodan_repset_entries(zodan_ci.zodan_repset_spec(joiner)) e
         EXCEPT SELECT 'only on ' || joiner || ': ' || e FROM zodan_ci.zodan_repset_entries(zodan_ci.zodan_repset_spec(src)) e)) d(d);
    IF diff IS NOT NULL THEN
        PERFORM zodan_ci.zodan_warn(ctx, format('replication sets of %s changed during the join; reconcile on %s with spock.repset_add_table/repset_remove_table: %s',
            src, joiner, array_to_string(diff, '; ')));
    END IF;
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 7: N receives each peer's changes from the peer directly, from
-- exactly where S left off (see handover.sql.tmpl).
CREATE FUNCTION zodan_ci.zodan_add_node_hand_over(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    peers text[] := ARRAY(SELECT jsonb_array_elements_text(ctx->'peers'));
    list text := array_to_string(peers, ', ');
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'hand-over',
        CASE WHEN cardinality(peers) = 0 THEN 'no other nodes'
             ELSE format('%s''s changes from %s directly, from exactly where %s left off', list, list, ctx->>'src') END);
    IF cardinality(peers) = 0 THEN
        RETURN zodan_ci.zodan_phase_done(ctx, 'skipped');
    END IF;
    PERFORM zodan_ci.zodan_hand_over(ctx, ctx->>'src', ctx->>'target', peers, ctx->'peer_sync');
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 8: every existing node X subscribes to N.
CREATE FUNCTION zodan_ci.zodan_add_node_subscribe(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    joiner text := ctx->>'target';
    existing text[] := ARRAY[ctx->>'src'] || ARRAY(SELECT jsonb_array_elements_text(ctx->'peers'));
    sets text[];
    x text;
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'subscribe', format('%s subscribe to %s', array_to_string(existing, ', '), joiner));
    sets := ARRAY(SELECT s->>'name' FROM jsonb_array_elements(zodan_ci.zodan_repset_spec(joiner)->'sets') s);
    FOREACH x IN ARRAY existing LOOP
        PERFORM zodan_ci.zodan_exec_secret(x, format(
            'SELECT spock.sub_create(subscription_name := %L, provider_dsn := %L,
                    replication_sets := %L::text[], synchronize_structure := false,
                    synchronize_data := false, forward_origins := ''{}'', apply_delay := ''0'',
                    enabled := true)',
            zodan_ci.zodan_sub_name(joiner, x), ctx->'dsns'->>joiner, sets));
        PERFORM zodan_ci.zodan_detail(ctx, format('created %s on %s', zodan_ci.zodan_sub_name(joiner, x), x));
    END LOOP;
    PERFORM zodan_ci.zodan_wait_replicating(ctx, existing);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 9: changes flow both ways between every pair: every node's event
-- reaches every other node.
CREATE FUNCTION zodan_ci.zodan_add_node_verify(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    everyone text[] := zodan_ci.zodan_add_node_nodes(ctx);
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'verify', 'changes flow both ways between every pair');
    PERFORM zodan_ci.zodan_sync(ctx, everyone, everyone);
    PERFORM zodan_ci.zodan_wait_replicating(ctx, everyone);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 10: no node discarded a transaction during the join, and N holds
-- what S holds.
CREATE FUNCTION zodan_ci.zodan_add_node_compare(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    joiner text := ctx->>'target';
    r record;
    failed text[] := '{}'::text[];
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'compare', format('%s against %s, and every node''s discarded transactions', joiner, ctx->>'src'));
    FOR r IN SELECT * FROM zodan_ci.zodan_compare(ctx, ctx->>'src', joiner, zodan_ci.zodan_add_node_nodes(ctx), ctx->'discarded') LOOP
        IF r.ok THEN
            PERFORM zodan_ci.zodan_info(ctx, format('%s: %s', r.check_name, r.detail));
        ELSE
            failed := failed || format('%s: %s', r.check_name, r.detail);
        END IF;
    END LOOP;
    IF cardinality(failed) > 0 THEN
        RAISE EXCEPTION '% differs from the cluster after joining', joiner
            USING ERRCODE = 'ZDD03', DETAIL = array_to_string(failed, E'\n'),
                  HINT = 'The join is rolled back. Report this with the server logs of every node; spock.exception_log says which transactions were not applied.';
    END IF;
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- add_node's part of zodan_op_fail: undoes the join once the checks had
-- passed (nothing is created before), and says what happened. what names
-- the failure; attempt > 1 when a cancel interrupted an earlier try.
-- Returns the cleanup note for the journal and the error's detail.
CREATE FUNCTION zodan_ci.zodan_add_node_rollback(ctx jsonb, what text, attempt integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    pending jsonb;
    src text := ctx->>'src';
BEGIN
    IF coalesce((ctx->>'done')::integer, 0) < 1 THEN
        RETURN 'Nothing had been created.';
    END IF;
    PERFORM zodan_ci.zodan_say(ctx, 'ZD006', format('%s; rolling back%s', what,
        CASE WHEN attempt > 1 THEN ' (again, after a cancel)' ELSE '' END));
    BEGIN
        pending := zodan_ci.zodan_undo_join(ctx, ctx->>'target', src,
            ARRAY[src] || ARRAY(SELECT jsonb_array_elements_text(coalesce(ctx->'peers', '[]'))),
            ctx->'dsns', coalesce((ctx->>'source_registered')::boolean, false),
            zodan_ci.zodan_value(ctx->>'local', format('SELECT details->''content'' FROM zodan_ci.zodan_operation WHERE op_id = %s', ctx->>'op'))::jsonb);
        IF pending = '{}'::jsonb THEN
            RETURN 'Everything add_node had created was removed; fix the cause and CALL add_node again.';
        END IF;
        PERFORM zodan_ci.zodan_op_note(ctx, '{"cleanup_incomplete": true}');
        RETURN format(E'Rolled back on every reachable node, but not on: %s. Once they are back, CALL add_node again (it finishes the cleanup first), or run there:\n%s',
                      (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(pending) k),
                      zodan_ci.zodan_pending_text(pending));
    EXCEPTION WHEN OTHERS THEN
        PERFORM zodan_ci.zodan_op_note(ctx, '{"cleanup_incomplete": true}');
        RETURN format('The rollback failed too (%s). CALL add_node again once the cause is fixed: it finishes the cleanup first.',
                      zodan_ci.zodan_redact(SQLERRM));
    END;
END;
$fn$;

-- Undoes a join of node N (see cleanup.sql.tmpl): N's subscriptions and
-- node first, then N's traces on every other node, then the source's node
-- row if add_node created it, then whatever the copy put into N. Returns
-- the statements left for nodes that could not be reached.
CREATE FUNCTION zodan_ci.zodan_undo_join(ctx jsonb, n text, s text, nodes text[], dsns jsonb, source_registered boolean,
                                        content jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    pending jsonb;
BEGIN
    -- A rollback must not fail for a tight sync_timeout: stopping workers
    -- and dropping what the copy created can take a while.
    PERFORM zodan_ci.zodan_relax_timeouts(ctx, nodes || n);
    -- Its workers stop first, so nothing it subscribes with stays in use.
    PERFORM zodan_ci.zodan_drop_subscriptions(n);
    -- A copy that died while it had the source's apply workers paused
    -- leaves them paused until Spock's pause timeout; release them now.
    IF zodan_ci.zodan_reachable(ctx, s, dsns) THEN
        BEGIN
            PERFORM zodan_ci.zodan_exec(s, 'SELECT spock.resume_apply_workers()');
        EXCEPTION WHEN OTHERS THEN
            PERFORM zodan_ci.zodan_detail(ctx, format('could not resume apply workers on %s: %s', s, SQLERRM));
        END;
    END IF;
    pending := zodan_ci.zodan_detach(ctx, n, nodes, dsns);
    IF source_registered THEN
        BEGIN
            IF zodan_ci.zodan_reachable(ctx, s, dsns) THEN
                PERFORM zodan_ci.zodan_exec(s, format(
                    'SELECT spock.node_drop(%L, true) WHERE NOT EXISTS (SELECT 1 FROM spock.subscription)', s));
            ELSE
                pending := pending || jsonb_build_object(s, jsonb_build_array(format('SELECT spock.node_drop(%L, true)', s)));
            END IF;
        EXCEPTION WHEN OTHERS THEN
            pending := pending || jsonb_build_object(s, jsonb_build_array(format('SELECT spock.node_drop(%L, true)', s)));
        END;
    END IF;
    PERFORM zodan_ci.zodan_reset_node(ctx, n, content);
    RETURN pending;
END;
$fn$;

-- The closing report: the cluster's nodes and every subscription's status.
CREATE FUNCTION zodan_ci.zodan_report(ctx jsonb, via text, nodes text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    node text;
BEGIN
    PERFORM zodan_ci.zodan_say(ctx, 'ZD005', 'nodes: ' || (SELECT string_agg(
        (j->>'node_name') || coalesce(' (' || nullif(concat_ws(', ', nullif(j->>'location', ''), nullif(j->>'country', '')), '') || ')', ''),
        ', ' ORDER BY j->>'node_name')
        FROM zodan_ci.zodan_query(via, 'SELECT node_name, location, country FROM spock.node') AS j));
    FOREACH node IN ARRAY (SELECT array_agg(x ORDER BY x) FROM unnest(nodes) x) LOOP
        PERFORM zodan_ci.zodan_say(ctx, 'ZD005', format('subscriptions on %s: %s', node, coalesce((SELECT string_agg(
            format('%s %s', j->>'subscription_name', j->>'status'), ', ' ORDER BY j->>'subscription_name')
            FROM zodan_ci.zodan_query(node, 'SELECT subscription_name, status FROM spock.sub_show_status()') AS j), 'none')));
    END LOOP;
END;
$fn$;

-- ---------------------------------------------------------------------------
-- remove_node: takes a node out of the cluster. Runs on the node itself
-- (as upstream Zodan does) or on any other node of the cluster, so a node
-- that is down, unreachable or only half added can be removed too.
--
--   1 checks   find the target on every node, take the cluster lock
--   2 drain    if the target is reachable, the others receive everything
--              it committed so far
--   3 detach   every other node drops its subscriptions from the target,
--              the slots the target reads, its progress rows and its node
--   4 reset    the target (if reachable) drops its subscriptions and node:
--              it keeps its data and becomes a plain database
--   5 verify   the remaining nodes replicate among themselves
-- ---------------------------------------------------------------------------

CREATE PROCEDURE zodan_ci.remove_node(
    target_node_name text,
    target_node_dsn text DEFAULT NULL,
    verbose_mode boolean DEFAULT true,
    sync_timeout interval DEFAULT NULL)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $proc$
DECLARE
    here text;
    local_dsn text;
    ctx jsonb;
    st text; msg text; det text; hnt text;
BEGIN
    -- Nothing this CALL runs is logged with its text or parameters: they
    -- carry DSNs.
    PERFORM zodan_ci.zodan_prepare_session();
    PERFORM zodan_ci.zodan_require_dblink();
    IF target_node_name IS NULL THEN
        RAISE EXCEPTION 'target_node_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The node this runs on, and the DSN to reach it from itself.
    SELECT name, dsn INTO here, local_dsn FROM zodan_ci.zodan_local_node();
    IF here IS NULL THEN
        RAISE EXCEPTION 'remove_node must run on a node of the cluster, and this database is not a Spock node'
            USING ERRCODE = 'ZDC01',
                  HINT = format('Connect to any remaining node of the cluster (or to %s itself) and run the CALL there.', target_node_name);
    END IF;
    IF here = target_node_name AND target_node_dsn IS NOT NULL THEN
        local_dsn := target_node_dsn;
    END IF;

    ctx := zodan_ci.zodan_op_context('remove_node', target_node_name, here, verbose_mode, sync_timeout,
        ARRAY['checks', 'drain', 'detach', 'reset', 'verify'],
        jsonb_build_object('dsns', jsonb_build_object(here, local_dsn)
                                   || jsonb_strip_nulls(jsonb_build_object(target_node_name, target_node_dsn))));
    BEGIN
        ctx := zodan_ci.zodan_op_begin(ctx, NULL, jsonb_build_object('run_on', here));
        ctx := zodan_ci.zodan_remove_node_checks(ctx);
        ctx := zodan_ci.zodan_remove_node_drain(ctx);
        ctx := zodan_ci.zodan_remove_node_detach(ctx);
        ctx := zodan_ci.zodan_remove_node_reset(ctx);
        ctx := zodan_ci.zodan_remove_node_verify(ctx);
        PERFORM zodan_ci.zodan_op_succeeded(ctx, ctx->'reachable'->>0,
            ARRAY(SELECT jsonb_array_elements_text(ctx->'reachable')),
            CASE WHEN ctx->'pending' <> '{}'::jsonb THEN
                format(E'Not cleaned yet: %s. Once they are back, run there:\n%s',
                       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(ctx->'pending') k),
                       zodan_ci.zodan_pending_text(ctx->'pending')) END,
            format('%s removed', target_node_name));
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        PERFORM zodan_ci.zodan_op_fail(ctx, st, msg, det, hnt);
    END;
    PERFORM zodan_ci.zodan_disconnect_all();
END;
$proc$;

COMMENT ON PROCEDURE zodan_ci.remove_node(text, text, boolean, interval) IS
    'zodan: removes a node from the cluster; runs on that node or on any other node, also when the node is down';

-- The phases of remove_node, in order: ctx->>'target' is the node T to
-- remove, ctx->>'local' the node the CALL runs on.

-- Phase 1: every node this one knows, and every node those know (a half
-- added node may be known only to some), each locked; whether T is
-- reachable. Returns ctx with 'survivors' (every other node known),
-- 'reachable' (those locked, T included if reachable), 'target_up'.
CREATE FUNCTION zodan_ci.zodan_remove_node_checks(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tgt text := ctx->>'target';
    here text := ctx->>'local';
    target_dsn text := ctx->'dsns'->>(ctx->>'target');
    target_up boolean := false;
    r record;
    node text;
    known text[] := ARRAY[here];
    reachable text[] := '{}'::text[];
    unreachable jsonb := '{}'::jsonb;
    dsns jsonb := ctx->'dsns';
    survivors text[];
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'checks', format('find %s in the cluster of %s', tgt, here));
    FOR r IN SELECT * FROM zodan_ci.zodan_cluster_nodes(here) LOOP
        IF r.name = tgt THEN
            target_dsn := coalesce(target_dsn, r.dsn);
            CONTINUE;
        END IF;
        CONTINUE WHEN r.name = here;
        known := known || r.name;
        dsns := dsns || jsonb_build_object(r.name, r.dsn);
        BEGIN
            PERFORM zodan_ci.zodan_join(ctx, r.name, r.dsn);
            reachable := reachable || r.name;
        EXCEPTION WHEN lock_not_available THEN
            RAISE;
        WHEN OTHERS THEN
            unreachable := unreachable || jsonb_build_object(r.name, zodan_ci.zodan_redact(SQLERRM));
        END;
    END LOOP;
    IF here <> tgt THEN
        reachable := here || reachable;
    END IF;
    survivors := ARRAY(SELECT x FROM unnest(known) x WHERE x <> tgt ORDER BY 1);
    FOREACH node IN ARRAY reachable LOOP
        FOR r IN SELECT * FROM zodan_ci.zodan_cluster_nodes(node) WHERE name = tgt LOOP
            target_dsn := coalesce(target_dsn, r.dsn);
        END LOOP;
    END LOOP;

    IF here = tgt THEN
        target_up := true;
    ELSIF target_dsn IS NOT NULL THEN
        BEGIN
            PERFORM zodan_ci.zodan_join(ctx, tgt, target_dsn);
            target_up := true;
        EXCEPTION WHEN lock_not_available THEN
            RAISE;
        WHEN OTHERS THEN
            PERFORM zodan_ci.zodan_warn(ctx, format('%s is unreachable (%s): what it committed and did not send yet is lost with it',
                                                  tgt, zodan_ci.zodan_redact(SQLERRM)));
        END;
    END IF;
    IF target_dsn IS NULL AND NOT target_up THEN
        RAISE EXCEPTION 'node % is not part of the cluster of %', tgt, here
            USING ERRCODE = 'ZDC01',
                  HINT = format('Nodes known to %s: %s.', here, array_to_string(known, ', '));
    END IF;
    IF unreachable <> '{}'::jsonb THEN
        PERFORM zodan_ci.zodan_warn(ctx, format('unreachable, to be cleaned later: %s',
            (SELECT string_agg(format('%s (%s)', key, value #>> '{}'), ', ') FROM jsonb_each(unreachable))));
    END IF;
    PERFORM zodan_ci.zodan_info(ctx, format('%s is %s; remaining nodes: %s', tgt,
        CASE WHEN target_up THEN 'reachable' ELSE 'unreachable' END,
        coalesce(nullif(array_to_string(survivors, ', '), ''), 'none')));
    ctx := ctx || jsonb_build_object('dsns', dsns || jsonb_strip_nulls(jsonb_build_object(tgt, target_dsn)),
                                     'survivors', to_jsonb(survivors), 'reachable', to_jsonb(reachable),
                                     'target_up', target_up, 'pending', '{}'::jsonb);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 2: if T is reachable, the nodes that receive its changes get
-- everything it committed so far.
CREATE FUNCTION zodan_ci.zodan_remove_node_drain(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tgt text := ctx->>'target';
    node text;
    subscribers text[] := '{}'::text[];
BEGIN
    IF (ctx->>'target_up')::boolean THEN
        FOR node IN SELECT jsonb_array_elements_text(ctx->'reachable') LOOP
            IF zodan_ci.zodan_value(node, format(
                   'SELECT count(*) FROM spock.subscription s JOIN spock.node o ON o.node_id = s.sub_origin
                     WHERE o.node_name = %L AND s.sub_enabled', tgt))::integer > 0 THEN
                subscribers := subscribers || node;
            END IF;
        END LOOP;
    END IF;
    ctx := zodan_ci.zodan_phase_begin(ctx, 'drain',
        CASE WHEN cardinality(subscribers) = 0 THEN 'nothing to send'
             ELSE format('%s receive what %s committed', array_to_string(subscribers, ', '), tgt) END);
    IF cardinality(subscribers) = 0 THEN
        RETURN zodan_ci.zodan_phase_done(ctx, 'skipped');
    END IF;
    IF zodan_ci.zodan_value(tgt, 'SELECT count(*) FROM spock.local_node')::integer > 0 THEN
        PERFORM zodan_ci.zodan_info(ctx, format('%s have %s''s changes up to %s', array_to_string(subscribers, ', '), tgt,
            zodan_ci.zodan_sync(ctx, ARRAY[tgt], subscribers)->>tgt));
    END IF;
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 3: every other node drops its subscriptions from T, the slots T
-- reads, its progress rows and its node. Unreachable nodes add to
-- ctx->'pending' the statements to run there later.
CREATE FUNCTION zodan_ci.zodan_remove_node_detach(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tgt text := ctx->>'target';
    survivors text[] := ARRAY(SELECT jsonb_array_elements_text(ctx->'survivors'));
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'detach',
        format('remove %s from %s', tgt, coalesce(nullif(array_to_string(survivors, ', '), ''), 'no other node')));
    IF (ctx->>'target_up')::boolean THEN
        -- Its apply workers stop first, so its slots on the others are free.
        PERFORM zodan_ci.zodan_drop_subscriptions(tgt);
    END IF;
    ctx := ctx || jsonb_build_object('pending', (ctx->'pending') || zodan_ci.zodan_detach(ctx, tgt, survivors, ctx->'dsns'));
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 4: T, if reachable, drops its subscriptions and node: it keeps
-- its data and becomes a plain database.
CREATE FUNCTION zodan_ci.zodan_remove_node_reset(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tgt text := ctx->>'target';
BEGIN
    ctx := zodan_ci.zodan_phase_begin(ctx, 'reset', format('%s becomes a plain database, keeping its data', tgt));
    IF NOT (ctx->>'target_up')::boolean THEN
        ctx := ctx || jsonb_build_object('pending', (ctx->'pending') || jsonb_build_object(tgt, to_jsonb(zodan_ci.zodan_reset_statements())));
        RETURN zodan_ci.zodan_phase_done(ctx, 'skipped');
    END IF;
    PERFORM zodan_ci.zodan_reset_node(ctx, tgt, NULL);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- Phase 5: the remaining reachable nodes replicate among themselves.
-- Returns ctx with 'reachable' without T.
CREATE FUNCTION zodan_ci.zodan_remove_node_verify(ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    reachable text[] := ARRAY(SELECT x FROM jsonb_array_elements_text(ctx->'reachable') x WHERE x <> ctx->>'target');
BEGIN
    ctx := ctx || jsonb_build_object('reachable', to_jsonb(reachable));
    ctx := zodan_ci.zodan_phase_begin(ctx, 'verify', CASE cardinality(reachable)
        WHEN 0 THEN 'no node remains reachable'
        WHEN 1 THEN format('%s is the only node left', reachable[1])
        ELSE format('%s replicate among themselves', array_to_string(reachable, ', ')) END);
    IF cardinality(reachable) < 2 THEN
        RETURN zodan_ci.zodan_phase_done(ctx, 'skipped');
    END IF;
    PERFORM zodan_ci.zodan_wait_replicating(ctx, reachable);
    PERFORM zodan_ci.zodan_sync(ctx, reachable, reachable);
    RETURN zodan_ci.zodan_phase_done(ctx);
END;
$fn$;

-- remove_node's part of zodan_op_fail: nothing to roll back, since every
-- step of a removal is idempotent; says how to finish.
CREATE FUNCTION zodan_ci.zodan_remove_node_rollback(ctx jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN coalesce((ctx->>'done')::integer, 0) < 1 THEN 'Nothing was changed.'
                ELSE format('Removal is idempotent: fix the cause and CALL zodan_ci.remove_node(%L) again to finish it.', ctx->>'target') END;
$fn$;

-- ---------------------------------------------------------------------------
-- Public helpers that upstream's Zodan script defines and that its tests
-- and runbooks call, with upstream's names, signatures and meaning. They
-- are built on zodan's own checks, so they apply the same rules.
-- ---------------------------------------------------------------------------

-- Raises "Spock version mismatch: ..." unless the new node can join the
-- cluster of the source by version: every node runs Spock
-- 5.0.9 or later, the new node the same major.minor as the source, and
-- no node a newer major.minor than the new node (see health_check's
-- spock-version check). With verb, says what it found.
CREATE PROCEDURE zodan_ci.check_spock_version_compatibility(
    src_dsn text,
    new_node_dsn text,
    verb boolean DEFAULT false)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    app text := 'zodan check_spock_version_compatibility';
    timeout_s integer := zodan_ci.zodan_sync_timeout();
    facts jsonb := '{}'::jsonb;
    src text;
    r record;
    c record;
    reasons text[] := '{}'::text[];
BEGIN
    PERFORM zodan_ci.zodan_prepare_session();
    PERFORM zodan_ci.zodan_require_dblink();
    IF src_dsn IS NULL OR new_node_dsn IS NULL THEN
        RAISE EXCEPTION 'src_dsn and new_node_dsn are required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM zodan_ci.zodan_disconnect_all();
    BEGIN
        PERFORM zodan_ci.zodan_connect('(new node)', new_node_dsn, app, timeout_s);
        facts := jsonb_build_object('(new node)', zodan_ci.zodan_facts('(new node)'));
        PERFORM zodan_ci.zodan_connect('(source)', src_dsn, app, timeout_s);
        src := coalesce(zodan_ci.zodan_facts('(source)')->>'local_node', '(source)');
        IF src <> '(source)' THEN
            PERFORM zodan_ci.zodan_connect(src, src_dsn, app, timeout_s);
        END IF;
        facts := facts || jsonb_build_object(src, zodan_ci.zodan_facts(src));
        IF facts->src->>'spock' IS NOT NULL AND src <> '(source)' THEN
            FOR r IN SELECT * FROM zodan_ci.zodan_cluster_nodes(src) WHERE name <> src LOOP
                PERFORM zodan_ci.zodan_connect(r.name, r.dsn, app, timeout_s);
                facts := facts || jsonb_build_object(r.name, zodan_ci.zodan_facts(r.name));
            END LOOP;
        END IF;
        FOR c IN SELECT * FROM zodan_ci.zodan_checks('pre', src, '(new node)', ARRAY(SELECT jsonb_object_keys(facts) EXCEPT SELECT '(new node)'),
                                                   facts, '{}'::jsonb)
                  WHERE check_name = 'spock-version' LOOP
            IF NOT c.ok THEN
                reasons := reasons || c.detail;
            ELSIF verb THEN
                RAISE NOTICE 'Version check passed: %', c.detail;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        PERFORM zodan_ci.zodan_disconnect_all();
        RAISE;
    END;
    PERFORM zodan_ci.zodan_disconnect_all();
    IF cardinality(reasons) > 0 THEN
        RAISE EXCEPTION 'Spock version mismatch: %', array_to_string(reasons, '; ')
            USING ERRCODE = 'ZDC01',
                  HINT = 'Every node needs Spock 5.0.9 or later; a new node needs its source''s Spock major.minor.';
    END IF;
END;
$fn$;

