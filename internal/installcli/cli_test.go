package installcli_test

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

var (
	latest       = strconv.Itoa(int(install.Latest()))
	rel          = " (zodan " + zodan.Version + ")"
	installed    = "installed version 0 -> " + latest + rel
	statusClean  = "version " + latest + rel + ", procedures exactly as released in zodan " + zodan.Version
	notInstalled = "not installed (this build installs version " + latest + ";"
	// thisBuild ends the status of a node at an older version.
	thisBuild = "; this build installs version " + latest + rel
)

func TestInstallStatusUninstallLeavesNoTrace(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		setup  string
		dblink string // schema of dblink while installed
	}{
		{"without dblink", "", "public"},
		{"with dblink", "CREATE EXTENSION dblink", "public"},
		{"with dblink in another schema", "CREATE SCHEMA ext; CREATE EXTENSION dblink SCHEMA ext", "ext"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t)
			if c.setup != "" {
				n.c.Exec(t, n.db, c.setup)
			}
			before := n.catalog(t)

			r := runOK(t, "install", "--schema", testSchema, "--dsn", n.dsn)
			wantLine(t, r, n.label, installed)
			r = runOK(t, "status", "--schema", testSchema, "--dsn", n.dsn)
			wantLine(t, r, n.label, statusClean)
			if got := n.value(t, `SELECT coalesce((SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'dblink'), 'none')`); got != c.dblink {
				t.Errorf("dblink is in %s while zodan is installed, want %s", got, c.dblink)
			}
			// The procedures call dblink where it is.
			if def := n.value(t, `SELECT pg_get_functiondef('zodan_ci.zodan_connected(text)'::regprocedure)`); !strings.Contains(def, c.dblink+".dblink_get_connections()") {
				t.Errorf("zodan_connected does not call %s.dblink_get_connections():\n%s", c.dblink, def)
			}
			// A second install converges.
			r = runOK(t, "install", "--schema", testSchema, "--dsn", n.dsn)
			wantLine(t, r, n.label, "version "+latest+rel+", nothing to do")

			r = runOK(t, "uninstall", "--schema", testSchema, "--dsn", n.dsn)
			wantLine(t, r, n.label, "uninstalled version "+latest+rel)
			if d := catalogDiff(before, n.catalog(t)); d != "" {
				t.Errorf("install + uninstall changed the database:\n%s", d)
			}
			r = runOK(t, "status", "--schema", testSchema, "--dsn", n.dsn)
			if !strings.Contains(r.stdout, n.label+": "+notInstalled) {
				t.Errorf("status after uninstall:\n%s", r)
			}
			r = runOK(t, "uninstall", "--schema", testSchema, "--dsn", n.dsn)
			wantLine(t, r, n.label, "not installed, nothing to do")
			if d := catalogDiff(before, n.catalog(t)); d != "" {
				t.Errorf("a second uninstall changed the database:\n%s", d)
			}
		})
	}
}

func TestDowngradeAndUpgrade(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	flags := []string{"--schema", testSchema, "--dsn", n.dsn}
	before := n.catalog(t)
	routines := func() string {
		return n.value(t, `SELECT count(*)::text FROM pg_proc WHERE pronamespace = 'zodan_ci'::regnamespace`)
	}

	runOK(t, append([]string{"install"}, flags...)...)
	n.c.Exec(t, n.db, `INSERT INTO zodan_ci.zodan_operation (kind, node_name, coordinator_pid, coordinator_started, state)
		VALUES ('add_node', 'n4', 1, now(), 'succeeded')`)

	r := runOK(t, append([]string{"downgrade", "--to", "1"}, flags...)...)
	wantLine(t, r, n.label, "downgraded version "+latest+rel+" -> 1")
	if got := routines(); got != "0" {
		t.Errorf("%s routines left in %s at version 1", got, testSchema)
	}
	for _, relation := range []string{"zodan_ci.zodan_install", "zodan_ci.zodan_code_object"} {
		if n.hasRelation(t, relation) {
			t.Errorf("%s still exists at version 1", relation)
		}
	}
	if got := n.value(t, `SELECT count(*)::text FROM zodan_ci.zodan_operation`); got != "1" {
		t.Errorf("the operation journal lost its rows in the downgrade: %s rows", got)
	}
	if got := n.value(t, `SELECT count(*)::text FROM pg_extension WHERE extname = 'dblink'`); got != "0" {
		t.Error("dblink, created by the install, survived the downgrade of the procedures")
	}
	r = runOK(t, append([]string{"status"}, flags...)...)
	wantLine(t, r, n.label, "version 1, the operation journal without procedures"+thisBuild)

	r = run(t, append([]string{"upgrade", "--to", "0"}, flags...)...)
	if r.code != 1 || !strings.Contains(r.stdout, n.label+": FAILED: is at version 1; use downgrade to go to 0") {
		t.Errorf("upgrade to an older version:\n%s", r)
	}
	r = run(t, append([]string{"downgrade", "--to", latest}, flags...)...)
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED: is at version 1; use upgrade or install to go to "+latest) {
		t.Errorf("downgrade to a newer version:\n%s", r)
	}

	r = runOK(t, append([]string{"install"}, flags...)...)
	wantLine(t, r, n.label, "installed version 1 -> "+latest+rel)
	r = runOK(t, append([]string{"status"}, flags...)...)
	wantLine(t, r, n.label, statusClean)
	if got := n.value(t, `SELECT count(*)::text FROM zodan_ci.zodan_operation`); got != "1" {
		t.Errorf("the journal has %s rows after the upgrade, want 1", got)
	}

	r = runOK(t, append([]string{"downgrade", "--to", "0"}, flags...)...)
	wantLine(t, r, n.label, "downgraded version "+latest+rel+" -> 0")
	for _, relation := range []string{"zodan_ci.zodan_operation", "zodan_ci.zodan_operation_phase", "zodan_ci.zodan_operations"} {
		if n.hasRelation(t, relation) {
			t.Errorf("%s still exists at version 0", relation)
		}
	}
	r = runOK(t, append([]string{"status"}, flags...)...)
	if !strings.Contains(r.stdout, n.label+": "+notInstalled) {
		t.Errorf("status at version 0:\n%s", r)
	}
	// Only tern's version table (at 0) is left; uninstall removes it.
	runOK(t, append([]string{"uninstall"}, flags...)...)
	if d := catalogDiff(before, n.catalog(t)); d != "" {
		t.Errorf("after downgrade to 0 and uninstall the database differs:\n%s", d)
	}
}

func TestUpgradeFromOlderVersion(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	flags := []string{"--schema", testSchema, "--dsn", n.dsn}
	r := runOK(t, append([]string{"upgrade", "--to", "1"}, flags...)...)
	wantLine(t, r, n.label, "upgraded version 0 -> 1")
	if !n.hasRelation(t, "zodan_ci.zodan_operations") || n.hasRelation(t, "zodan_ci.zodan_install") {
		t.Errorf("version 1 should have the journal and no procedures")
	}
	r = runOK(t, append([]string{"install"}, flags...)...)
	wantLine(t, r, n.label, "installed version 1 -> "+latest+rel)
	r = runOK(t, append([]string{"status"}, flags...)...)
	wantLine(t, r, n.label, statusClean)
	r = runOK(t, append([]string{"upgrade", "--to", latest}, flags...)...)
	wantLine(t, r, n.label, "version "+latest+rel+", nothing to do")
}

// editFunction replaces a routine's body by hand, as a DBA might.
func editFunction(t *testing.T, n node, signature, from, to string) {
	t.Helper()
	def := n.value(t, `SELECT pg_get_functiondef($1::regprocedure)`, signature)
	if !strings.Contains(def, from) {
		t.Fatalf("%s does not contain %q:\n%s", signature, from, def)
	}
	n.c.Exec(t, n.db, strings.Replace(def, from, to, 1))
}

func TestDriftIsReportedAndRepaired(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	flags := []string{"--schema", testSchema, "--dsn", n.dsn}
	runOK(t, append([]string{"install"}, flags...)...)

	for _, c := range []struct {
		name   string
		change func()
		want   string
	}{
		{"edited", func() {
			editFunction(t, n, "zodan_ci.zodan_redact(text)", "    IF msg IS NULL THEN", "    -- edited by hand\n    IF msg IS NULL THEN")
		}, "changed by hand since install: zodan_ci.zodan_redact(text) was edited"},
		{"dropped", func() {
			n.c.Exec(t, n.db, "DROP FUNCTION zodan_ci.zodan_dsn_display(text)")
		}, "changed by hand since install: zodan_ci.zodan_dsn_display(text) was dropped"},
		{"edited and dropped", func() {
			editFunction(t, n, "zodan_ci.zodan_sync_timeout(interval)", "RETURN 600;", "RETURN 60;")
			n.c.Exec(t, n.db, "DROP PROCEDURE zodan_ci.health_check")
		}, "zodan_ci.zodan_sync_timeout(interval) was edited"},
		{"another build", func() {
			n.c.Exec(t, n.db, "UPDATE zodan_ci.zodan_install SET code_sha256 = repeat('0', 64), zodan_version = '0.9.0'")
		}, "they match no release of zodan (recorded as zodan 0.9.0): installed by another build, or their checksum was changed by hand"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.change()
			r := run(t, append([]string{"status"}, flags...)...)
			if r.code != 1 {
				t.Errorf("status exit %d, want 1", r.code)
			}
			if !strings.Contains(r.stdout, n.label+": FAILED: version "+latest) || !strings.Contains(r.stdout, c.want) ||
				!strings.Contains(r.stdout, "zodan-install install repairs them") {
				t.Errorf("status does not report %q with the way to repair it:\n%s", c.want, r)
			}
			if !strings.Contains(r.stderr, "failed on 1 of 1 nodes: "+n.label) {
				t.Errorf("stderr does not name the node:\n%s", r)
			}
			r = runOK(t, append([]string{"install"}, flags...)...)
			wantLine(t, r, n.label, "version "+latest+rel+", procedures reinstalled: they differed from zodan "+zodan.Version+"'s as released")
			r = runOK(t, append([]string{"status"}, flags...)...)
			wantLine(t, r, n.label, statusClean)
			if got := n.value(t, `SELECT zodan_ci.zodan_redact('password=x')`); got != "password=********" {
				t.Errorf("after the repair zodan_redact gives %q", got)
			}
		})
	}
	// An edited manifest is no way out: the routine is compared with
	// what this build installs.
	t.Run("routine outside the manifest", func(t *testing.T) {
		n.c.Exec(t, n.db, "CREATE FUNCTION zodan_ci.zodan_local_extra() RETURNS int LANGUAGE sql AS 'SELECT 1'")
		r := runOK(t, append([]string{"status"}, flags...)...)
		wantLine(t, r, n.label, statusClean)
		runOK(t, append([]string{"uninstall"}, flags...)...)
		if got := n.value(t, `SELECT count(*)::text FROM pg_proc WHERE proname = 'zodan_local_extra'`); got != "1" {
			t.Error("uninstall dropped a routine zodan did not install")
		}
	})
}

func TestSeveralNodesOneDown(t *testing.T) {
	t.Parallel()
	a, c := newNode(t), newNode(t)
	b := stoppedNode(t)
	bDSN := b.DSN("postgres")
	bLabel := fmt.Sprintf("127.0.0.1:%d/postgres", b.Port)

	r := run(t, "install", "--schema", testSchema, "--dsn", a.dsn, "--dsn", bDSN, "--dsn", c.dsn)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	wantLine(t, r, a.label, installed)
	wantLine(t, r, c.label, installed)
	// One line per node (a long cause continues on indented lines).
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 3 || !strings.HasPrefix(lines[0], a.label+": ") || !strings.HasPrefix(lines[1], bLabel+": FAILED: ") ||
		!strings.HasPrefix(lines[2], c.label+": ") {
		t.Errorf("want one line per node, in the order given, B failed:\n%s", r)
	}
	if !strings.Contains(r.stdout, bLabel+": FAILED: cannot connect to "+bLabel) || !strings.Contains(r.stdout, "connect: connection refused") {
		t.Errorf("B's line does not say why:\n%s", r)
	}
	if want := "zodan-install: failed on 1 of 3 nodes: " + bLabel + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	for _, n := range []node{a, c} {
		r := runOK(t, "status", "--schema", testSchema, "--dsn", n.dsn)
		wantLine(t, r, n.label, statusClean)
	}

	r = run(t, "status", "--schema", testSchema, "--dsn", a.dsn, "--dsn", bDSN)
	if r.code != 1 || !strings.Contains(r.stdout, a.label+": "+statusClean) || !strings.Contains(r.stdout, bLabel+": FAILED: cannot connect") {
		t.Errorf("status with B down:\n%s", r)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	a, b := newNode(t), newNode(t)
	nodes := []node{a, b}
	flags := []string{"--schema", testSchema, "--dsn", a.dsn, "--dsn", b.dsn}
	before := [][]string{a.catalog(t), b.catalog(t)}

	r := runOK(t, append([]string{"install", "--dry-run"}, flags...)...)
	for _, want := range []string{a.label + ": would run " + latest + " step(s):", b.label + ": would run " + latest + " step(s):",
		"-- up 001_operations.sql (version 0 -> 1)", "-- up 002_procedures.sql (version 1 -> 2)", "-- up 003_release_1.1.0.sql (version 2 -> 3)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r)
		}
	}
	// Each node's own SQL, rendered for that node: every release's code
	// (each migration installs its release).
	releases := len(install.Releases())
	for sql, want := range map[string]int{"CREATE PROCEDURE zodan_ci.add_node(": 2 * releases, "CREATE TABLE zodan_ci.zodan_operation (": 2,
		"CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public": 2} {
		if got := strings.Count(r.stdout, sql); got != want {
			t.Errorf("dry run on 2 nodes shows %q %d times, want %d", sql, got, want)
		}
	}
	for i, n := range nodes {
		if n.hasRelation(t, "zodan_ci.zodan_schema_version") {
			t.Errorf("%s: the dry run created the version table", n.label)
		}
		if d := catalogDiff(before[i], n.catalog(t)); d != "" {
			t.Errorf("%s: the dry run changed the database:\n%s", n.label, d)
		}
	}

	runOK(t, append([]string{"install"}, flags...)...)
	installedCatalog := [][]string{a.catalog(t), b.catalog(t)}
	r = runOK(t, append([]string{"install", "--dry-run"}, flags...)...)
	wantLine(t, r, a.label, "nothing to do")
	wantLine(t, r, b.label, "nothing to do")

	r = runOK(t, append([]string{"uninstall", "--dry-run"}, flags...)...)
	steps := strconv.Itoa(int(install.Latest()) + 1)
	for _, want := range []string{a.label + ": would run " + steps + " step(s):", b.label + ": would run " + steps + " step(s):", "-- down 002_procedures.sql (version 2 -> 1)",
		"-- down 001_operations.sql (version 1 -> 0)", "DROP TABLE zodan_ci.zodan_operation;", "DROP TABLE IF EXISTS zodan_ci.zodan_schema_version;"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("uninstall dry run lacks %q:\n%s", want, r)
		}
	}
	r = runOK(t, append([]string{"downgrade", "--to", "1", "--dry-run"}, flags...)...)
	if !strings.Contains(r.stdout, "-- down 002_procedures.sql (version 2 -> 1)") || strings.Contains(r.stdout, "001_operations") {
		t.Errorf("downgrade dry run:\n%s", r)
	}
	for i, n := range nodes {
		if d := catalogDiff(installedCatalog[i], n.catalog(t)); d != "" {
			t.Errorf("%s: the uninstall dry run changed the database:\n%s", n.label, d)
		}
	}
	r = runOK(t, append([]string{"status"}, flags...)...)
	wantLine(t, r, a.label, statusClean)
	wantLine(t, r, b.label, statusClean)

	// A drifted node: the dry run shows the repair, and does not do it.
	editFunction(t, a, "zodan_ci.zodan_redact(text)", "    IF msg IS NULL THEN", "    -- edited\n    IF msg IS NULL THEN")
	r = runOK(t, append([]string{"install", "--dry-run"}, flags...)...)
	if !strings.Contains(r.stdout, a.label+": would run 1 step(s):\n-- reinstall zodan "+zodan.Version+"'s procedures (changed by hand since install: zodan_ci.zodan_redact(text) was edited)") {
		t.Errorf("dry run on a drifted node:\n%s", r)
	}
	wantLine(t, r, b.label, "nothing to do")
	if r := run(t, append([]string{"status"}, flags...)...); r.code != 1 {
		t.Errorf("the dry run repaired the drift:\n%s", r)
	}
}

func TestDefaultSchemaNeedsSpock(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	before := n.catalog(t)
	r := run(t, "install", "--dsn", n.dsn)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	wantLine(t, r, n.label, "FAILED: the spock extension is not installed in this database; run CREATE EXTENSION spock first (zodan needs Spock "+render.MinSpockVersion+" or later)")
	if !strings.Contains(r.stderr, "failed on 1 of 1 nodes: "+n.label) {
		t.Errorf("stderr:\n%s", r)
	}
	if d := catalogDiff(before, n.catalog(t)); d != "" {
		t.Errorf("the refused install changed the database:\n%s", d)
	}
	r = runOK(t, "status", "--dsn", n.dsn)
	if !strings.Contains(r.stdout, n.label+": "+notInstalled) || !strings.Contains(r.stdout, "no spock extension)") {
		t.Errorf("status on plain PostgreSQL:\n%s", r)
	}
	r = run(t, "install", "--dsn", n.dsn, "--cluster")
	if r.code != 1 || !strings.Contains(r.stderr, "has no spock extension, so it has no cluster to list; give every node with --dsn instead") {
		t.Errorf("--cluster without Spock:\n%s", r)
	}
}

func TestPasswordNeverShown(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	down := stoppedNode(t)
	uri := (&url.URL{Scheme: "postgresql", User: url.UserPassword(pgtest.Superuser, pgtest.SharedPassword),
		Host: fmt.Sprintf("127.0.0.1:%d", n.c.Port), Path: "/" + n.db}).String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	const wrongPassword = "Wrong-pw-never-print-93"

	// Successes, in both DSN forms.
	for _, dsn := range []string{n.dsn, uri} {
		for _, cmd := range [][]string{{"install"}, {"status"}, {"install", "--dry-run"}, {"uninstall", "--dry-run"}, {"uninstall"}, {"upgrade", "--to", "1"}, {"downgrade", "--to", "0"}} {
			runOK(t, append(cmd, "--schema", testSchema, "--dsn", dsn)...)
		}
	}
	// Failures: every one names the node, none shows a password.
	for _, c := range []struct {
		name, dsn, want string
		knownBug        string // prefix for the failure of a reported, unfixed bug
	}{
		{name: "wrong port", dsn: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=x password=%s", freePort, pgtest.SharedPassword), want: "connection refused"},
		{name: "stopped node", dsn: down.DSN("postgres"), want: "connection refused"},
		{name: "stopped node, URI", dsn: fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", url.QueryEscape(downPassword), down.Port), want: "connection refused"},
		{name: "wrong password", dsn: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s password=%s", n.c.Port, n.db, wrongPassword), want: "password authentication failed"},
		{name: "wrong password, URI", dsn: fmt.Sprintf("postgresql://postgres:%s@127.0.0.1:%d/%s", wrongPassword, n.c.Port, n.db), want: "password authentication failed"},
		{name: "missing database", dsn: n.c.DSN("no_such_db"), want: `database "no_such_db" does not exist`},
		{name: "invalid DSN", dsn: fmt.Sprintf("host=127.0.0.1 port=notaport password=%s", pgtest.SharedPassword), want: "invalid DSN"},
		{name: "invalid DSN, quoted password", dsn: fmt.Sprintf("host=127.0.0.1 port=%d password='%s", n.c.Port, pgtest.SharedPassword), want: "invalid DSN"},
		// KNOWN BUG (reported to the lead): pgx's best-effort redaction
		// stops at the escaped quote, and dsn.Mask then leaves the rest.
		{name: "invalid DSN, escaped quote in the password", dsn: `host=127.0.0.1 port=notaport password='it\'s a ` + wrongPassword + `'`, want: "invalid DSN",
			knownBug: "KNOWN BUG (dsn.Mask after pgx's redaction): "},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, cmd := range [][]string{{"install"}, {"status"}, {"uninstall", "--dry-run"}} {
				r := run(t, append(cmd, "--schema", testSchema, "--dsn", c.dsn, "--dsn", n.dsn)...)
				if r.code != 1 {
					t.Errorf("exit %d, want 1:\n%s", r.code, r)
				}
				if !strings.Contains(r.stdout, c.want) || !strings.Contains(r.stderr, "failed on 1 of 2 nodes") {
					t.Errorf("output does not say %q:\n%s", c.want, r)
				}
				if strings.Contains(r.stdout+r.stderr, wrongPassword) {
					t.Errorf("%sthe wrong password was printed:\n%s", c.knownBug, r)
				}
			}
		})
	}
	runOK(t, "uninstall", "--schema", testSchema, "--dsn", n.dsn)
	for _, pw := range []string{pgtest.SharedPassword, downPassword, wrongPassword, url.QueryEscape(downPassword)} {
		for _, c := range []*pgtest.Cluster{n.c, down} {
			if strings.Contains(c.ReadLog(), pw) {
				t.Errorf("the server log of %s contains a password", c.Name)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "extra"}, `unexpected argument "extra"`},
		{[]string{"install", "--schema", "Bad"}, `--schema: schema name "Bad" is not a plain lowercase identifier`},
		{[]string{"downgrade"}, `Required flag "to" not set`},
		{[]string{"downgrade", "--to", "9"}, "--to 9: this build knows versions 0 to " + latest},
		{[]string{"upgrade", "--to", "-1"}, "--to -1: this build knows versions 0 to " + latest},
		{[]string{"install", "--cluster", "--dsn", "host=a", "--dsn", "host=b"}, "--cluster takes one --dsn (any node of the cluster), got 2"},
		{[]string{"install", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"render", "--schema", "No"}, `schema name "No"`},
	} {
		r := run(t, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("want exit 2 and %q on stderr:\n%s", c.want, r)
		}
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "zodan.sql")
	r := runOK(t, "render", "--schema", testSchema, "--out", out)
	if want := fmt.Sprintf("wrote %s (zodan %s, version %s)\n", out, zodan.Version, latest); r.stdout != want {
		t.Errorf("render --out printed %q, want %q", r.stdout, want)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := install.Script(render.Options{Schema: testSchema})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Error("render --out wrote something else than install.Script")
	}
	// Without --out: the script on stdout, as committed in dist/ (make render).
	r = runOK(t, "render")
	def, err := install.Script(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != def {
		t.Error("render with defaults differs from install.Script(render.Options{})")
	}
	r = runOK(t, "render", "--pg-version", "17", "--progress-column", "remote_commit_lsn", "--dblink-schema", "ext", "--schema", testSchema)
	for _, s := range []string{"use_native_failover_slots", "(progress column remote_commit_lsn;", "ext.dblink_exec(", "RETURN 600;", "CREATE EXTENSION dblink SCHEMA ext;"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("render with options lacks %q", s)
		}
	}
}
