package install_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/installcli"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// The committed psql script is what DBAs download; it must be what this
// build renders.
func TestCommittedScriptIsCurrent(t *testing.T) {
	t.Parallel()
	const path = "../../dist/zodan.sql"
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the committed psql script: %v; run `make render` and commit dist/zodan.sql", err)
	}
	want, err := install.Script(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if string(committed) != want {
		c, w := strings.Split(string(committed), "\n"), strings.Split(want, "\n")
		i := 0
		for i < len(c) && i < len(w) && c[i] == w[i] {
			i++
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Errorf("dist/zodan.sql is out of date: run `make render` and commit it.\nfirst difference at line %d:\n  committed: %s\n  rendered:  %s", i+1, line(c), line(w))
	}
}

func psqlPath(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(pgtest.DefaultBinDir(), "psql"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql not found in %s nor on PATH", pgtest.DefaultBinDir())
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// runPsql runs file with psql as a DBA would (ON_ERROR_STOP, no psqlrc),
// with function bodies checked at CREATE time.
func runPsql(t *testing.T, c *pgtest.Cluster, db, file string) (stdout, stderr string, exitCode int) {
	t.Helper()
	cmd := exec.CommandContext(ctxT(t), psqlPath(t), "-X", "-v", "ON_ERROR_STOP=1", "-d", c.DSN(db), "-f", file)
	cmd.Env = append(os.Environ(), "PGOPTIONS=-c check_function_bodies=on", "PGCONNECT_TIMEOUT=10")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exitCode = ee.ExitCode()
	default:
		t.Fatalf("running psql: %v", err)
	}
	return o.String(), e.String(), exitCode
}

func writeScript(t *testing.T, ro render.Options) (path, script string) {
	t.Helper()
	script, err := install.Script(ro)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "zodan.sql")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, script
}

var createRE = regexp.MustCompile(`(?m)^CREATE (FUNCTION|PROCEDURE) ` + testSchema + `\.([a-z_]+)\(`)

func TestScriptLoadsWithPsql(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	file, script := writeScript(t, render.Options{Schema: testSchema})

	out, errOut, code := runPsql(t, c, db, file)
	if code != 0 {
		t.Fatalf("psql -f zodan.sql exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	wantEcho := fmt.Sprintf("zodan %s (version %d) is installed in schema %s", zodan.Version, install.Latest(), testSchema)
	if !strings.Contains(out, wantEcho) {
		t.Errorf("psql output lacks %q:\n%s", wantEcho, out)
	}
	if strings.TrimSpace(errOut) != "" {
		t.Errorf("psql wrote to stderr on a clean install:\n%s", errOut)
	}

	conn := c.Connect(t, db)
	ctx := ctxT(t)
	// Every routine the script creates exists, of the right kind, and is
	// in the manifest; and the manifest lists nothing else.
	var want []string
	kinds := map[string]string{}
	// The script holds the procedures once: the newest release's.
	if n := strings.Count(script, "CREATE PROCEDURE "+testSchema+".add_node("); n != 1 {
		t.Errorf("the script creates add_node %d times, want once", n)
	}
	for _, m := range createRE.FindAllStringSubmatch(script, -1) {
		if _, dup := kinds[m[2]]; !dup {
			want = append(want, m[2])
		}
		kinds[m[2]] = map[string]string{"FUNCTION": "f", "PROCEDURE": "p"}[m[1]]
	}
	sort.Strings(want)
	if len(want) < 40 {
		t.Fatalf("the script creates only %d routines in %s", len(want), testSchema)
	}
	for _, p := range render.PublicProcedures {
		if kinds[p] != "p" {
			t.Errorf("the script does not create PROCEDURE %s.%s", testSchema, p)
		}
	}
	rows, err := conn.Query(ctx, `
		SELECT p.proname::text, p.prokind::text, c.signature IS NOT NULL
		  FROM pg_proc p LEFT JOIN `+testSchema+`.zodan_code_object c ON to_regprocedure(c.signature) = p.oid
		 WHERE p.pronamespace = $1::regnamespace ORDER BY 1`, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name, kind string
		var inManifest bool
		if err := rows.Scan(&name, &kind, &inManifest); err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
		if kind != kinds[name] {
			t.Errorf("%s.%s has prokind %q, the script creates it as %q", testSchema, name, kind, kinds[name])
		}
		if !inManifest {
			t.Errorf("%s.%s is not in %s.zodan_code_object", testSchema, name, testSchema)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("routines in schema %s:\n got %v\nwant %v", testSchema, got, want)
	}
	var manifest, dangling int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE to_regprocedure(signature) IS NULL) FROM `+testSchema+`.zodan_code_object`).Scan(&manifest, &dangling); err != nil {
		t.Fatal(err)
	}
	if manifest != len(want) || dangling != 0 {
		t.Errorf("manifest lists %d routines (%d missing from pg_proc), the script creates %d", manifest, dangling, len(want))
	}
	// Nobody but superusers may run them.
	var public int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace
		AND has_function_privilege('public', oid, 'EXECUTE')`, testSchema).Scan(&public); err != nil {
		t.Fatal(err)
	}
	if public != 0 {
		t.Errorf("%d routines are executable by PUBLIC", public)
	}

	// A second run takes the refresh path and changes nothing visible.
	out, errOut, code = runPsql(t, c, db, file)
	if code != 0 {
		t.Fatalf("second psql -f zodan.sql exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, wantEcho) {
		t.Errorf("second run: psql output lacks %q:\n%s", wantEcho, out)
	}
	var version int32
	var count int
	if err := conn.QueryRow(ctx, `SELECT (SELECT version FROM `+testSchema+`.zodan_schema_version),
		(SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace)`, testSchema).Scan(&version, &count); err != nil {
		t.Fatal(err)
	}
	if version != install.Latest() || count != len(want) {
		t.Errorf("after the second run: version %d, %d routines; want version %d, %d routines", version, count, install.Latest(), len(want))
	}

	// zodan-install sees what the script installed as its own.
	var so, se bytes.Buffer
	code = installcli.Main([]string{"zodan-install", "status", "--schema", testSchema, "--dsn", c.DSN(db)}, &so, &se)
	wantStatus := fmt.Sprintf("version %d (zodan %s), procedures exactly as released in zodan %s", install.Latest(), zodan.Version, zodan.Version)
	if code != 0 || !strings.Contains(so.String(), wantStatus) {
		t.Errorf("status after the psql script: exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s", code, wantStatus, so.String(), se.String())
	}
	if strings.Contains(so.String()+se.String(), pgtest.SharedPassword) {
		t.Error("status printed the password")
	}

	// ... and can remove it, with the dblink extension the script created.
	so.Reset()
	se.Reset()
	code = installcli.Main([]string{"zodan-install", "uninstall", "--schema", testSchema, "--dsn", c.DSN(db)}, &so, &se)
	if code != 0 || !strings.Contains(so.String(), fmt.Sprintf("uninstalled version %d", install.Latest())) {
		t.Errorf("uninstall after the psql script: exit %d\nstdout:\n%s\nstderr:\n%s", code, so.String(), se.String())
	}
	var left string
	if err := conn.QueryRow(ctx, `SELECT concat_ws(', ',
		(SELECT string_agg(proname, ' ') FROM pg_proc WHERE pronamespace = $1::regnamespace),
		(SELECT string_agg(relname, ' ') FROM pg_class WHERE relnamespace = $1::regnamespace),
		(SELECT string_agg(extname, ' ') FROM pg_extension WHERE extname <> 'plpgsql'))`, testSchema).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != "" {
		t.Errorf("after uninstall, left behind: %s", left)
	}
}

// The script calls dblink in the schema it was rendered for; elsewhere it
// refuses, saying how to render a fitting one.
func TestScriptRefusesDblinkElsewhere(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema+"; CREATE SCHEMA ext; CREATE EXTENSION dblink SCHEMA ext")
	file, _ := writeScript(t, render.Options{Schema: testSchema})
	out, errOut, code := runPsql(t, c, db, file)
	if code == 0 {
		t.Fatalf("the script ran with dblink in schema ext:\n%s", out)
	}
	for _, want := range []string{"dblink is installed in another schema than public", "zodan-install render --dblink-schema"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("psql stderr lacks %q:\n%s", want, errOut)
		}
	}
	// Rendered for that schema, it installs.
	file, _ = writeScript(t, render.Options{Schema: testSchema, Dblink: "ext"})
	if out, errOut, code := runPsql(t, c, db, file); code != 0 {
		t.Fatalf("the script rendered for dblink in ext: exit %d\n%s\n%s", code, out, errOut)
	}
	var so, se bytes.Buffer
	if code := installcli.Main([]string{"zodan-install", "status", "--schema", testSchema, "--dsn", c.DSN(db)}, &so, &se); code != 0 {
		t.Errorf("status: exit %d\n%s%s", code, so.String(), se.String())
	}
}

// The script rendered for the default schema is the committed one; on a
// database without Spock it must stop before changing anything.
func TestScriptRefusesWithoutSpock(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	out, errOut, code := runPsql(t, c, db, "../../dist/zodan.sql")
	if code == 0 {
		t.Fatalf("psql -f dist/zodan.sql succeeded on a database without Spock\n%s", out)
	}
	if !strings.Contains(errOut, "the spock extension is not installed in this database") {
		t.Errorf("psql stderr lacks the reason:\n%s", errOut)
	}
	if !strings.Contains(errOut, "CREATE EXTENSION spock") {
		t.Errorf("psql stderr lacks the hint to create the extension:\n%s", errOut)
	}
	conn := c.Connect(t, db)
	var leftovers []string
	rows, err := conn.Query(ctxT(t), `
		SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'
		UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'spock'
		UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname LIKE 'zodan%'`)
	if err != nil {
		t.Fatal(err)
	}
	leftovers, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(leftovers) > 0 {
		t.Errorf("the refused script left %v behind", leftovers)
	}
}

// The script upgrades a node of any older version, zodan 1.0.0's
// included, keeping its journal, and the result is what zodan-install
// would have installed.
func TestScriptUpgradesOlderVersions(t *testing.T) {
	t.Parallel()
	file, _ := writeScript(t, render.Options{Schema: testSchema})
	for _, from := range []int32{1, 2} {
		t.Run(fmt.Sprintf("from version %d", from), func(t *testing.T) {
			c := pgtest.Shared(t)
			db := c.Database(t)
			c.Exec(t, db, "CREATE SCHEMA "+testSchema)
			conn := c.Connect(t, db)
			in, err := install.New(conn, testSchema, render.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := in.MigrateTo(ctxT(t), from); err != nil {
				t.Fatal(err)
			}
			addJournalHistory(t, conn)
			journal := journalRows(t, conn)

			out, errOut, code := runPsql(t, c, db, file)
			if code != 0 {
				t.Fatalf("the script over version %d exited %d\n%s\n%s", from, code, out, errOut)
			}
			want := fmt.Sprintf("zodan %s (version %d) is installed in schema %s", zodan.Version, install.Latest(), testSchema)
			if !strings.Contains(out, want) {
				t.Errorf("psql output lacks %q:\n%s", want, out)
			}
			st, err := in.Inspect(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			check, err := in.CheckCode(st)
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != install.Latest() || st.Release != zodan.Version || !check.OK() || check.Expected.Version != zodan.Version {
				t.Errorf("after the script: version %d, release %q, code: %s", st.Version, st.Release, check.Problem())
			}
			if got := journalRows(t, conn); got != journal {
				t.Errorf("the journal changed in the upgrade:\nbefore: %s\nafter:  %s", journal, got)
			}
			// A second run converges.
			if out, errOut, code := runPsql(t, c, db, file); code != 0 || !strings.Contains(out, want) {
				t.Fatalf("second run: exit %d\n%s\n%s", code, out, errOut)
			}
			if st2, err := in.Inspect(ctxT(t)); err != nil || st2.Version != st.Version || st2.CodeSHA != st.CodeSHA || len(st2.Drift) != 0 {
				t.Errorf("second run: %+v, %v", st2, err)
			}
		})
	}
}

// A node with a newer version than the script's is refused, and left as
// it is: the script would have to downgrade it.
func TestScriptRefusesNewerVersion(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	conn := c.Connect(t, db)
	in, err := install.New(conn, testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Install(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	newer := install.Latest() + 1
	c.Exec(t, db, fmt.Sprintf("UPDATE %s.zodan_schema_version SET version = %d", testSchema, newer))
	file, _ := writeScript(t, render.Options{Schema: testSchema})
	out, errOut, code := runPsql(t, c, db, file)
	if code == 0 {
		t.Fatalf("the script ran over version %d:\n%s", newer, out)
	}
	want := fmt.Sprintf("zodan version %d is installed in schema %s, newer than this script's version %d (zodan %s)", newer, testSchema, install.Latest(), zodan.Version)
	if !strings.Contains(errOut, want) {
		t.Errorf("psql stderr lacks %q:\n%s", want, errOut)
	}
	if !strings.Contains(errOut, "zodan-install") {
		t.Errorf("psql stderr does not point to zodan-install:\n%s", errOut)
	}
	st, err := in.Inspect(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != newer {
		t.Errorf("version is %d after the refused script, want %d", st.Version, newer)
	}
}

// The script leaves dblink to the DBA, as upstream's does: runbooks load
// it and then run CREATE EXTENSION dblink, which must still work; a CALL
// before that says what is missing and how to fix it.
func TestScriptLeavesDblinkToTheDBA(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	file, script := writeScript(t, render.Options{Schema: testSchema})
	if strings.Contains(script, "CREATE EXTENSION IF NOT EXISTS dblink") {
		t.Error("the script creates the dblink extension")
	}
	if _, errOut, code := runPsql(t, c, db, file); code != 0 {
		t.Fatalf("psql -f zodan.sql without dblink exited %d: %s", code, errOut)
	}
	conn := c.Connect(t, db)
	_, err := conn.Exec(ctxT(t), "CALL "+testSchema+".health_check('n1', 'host=h password=s3cret')")
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "42883" || !strings.Contains(pg.Message, "the dblink extension is not installed in schema public") ||
		!strings.Contains(pg.Hint, "CREATE EXTENSION dblink SCHEMA public;") {
		t.Fatalf("health_check without dblink: want 42883 naming the fix, got %v (hint %q)", err, hintOf(err))
	}
	c.Exec(t, db, "CREATE EXTENSION dblink")
	var created bool
	if err := conn.QueryRow(ctxT(t), "SELECT dblink_created FROM "+testSchema+".zodan_install").Scan(&created); err != nil || created {
		t.Errorf("zodan_install.dblink_created = %v (%v) after the script: uninstall would drop the DBA's dblink", created, err)
	}
}

func hintOf(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Hint
	}
	return ""
}
