package install_test

// SQL-level tests of the installed helpers, through SQL on a real
// PostgreSQL: the procedures rely on them for every DSN they touch and
// every message they print.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dsn"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// TestSQLHelpers installs zodan once and runs each helper's cases on it.
func TestSQLHelpers(t *testing.T) {
	t.Parallel()
	c, db, conn := installedDB(t, render.Options{})
	for _, h := range []struct {
		name string
		test func(*testing.T, *pgtest.Cluster, string, *pgx.Conn)
	}{
		{"zodan_conninfo", testSQLConninfo},
		{"zodan_dsn_dbname", testSQLDSNDbname},
		{"zodan_redact", testSQLRedact},
		{"zodan_dsn_display", testSQLDSNDisplay},
		{"zodan_dsn_with_default", testSQLDSNWithDefault},
		{"same masking as Go", testSQLMaskingMatchesGo},
		{"zodan_sync_timeout", testSQLSyncTimeout},
		{"remote helpers", testSQLRemoteHelpers},
		{"zodan_correct_sub_status", testSQLCorrectSubStatus},
	} {
		t.Run(h.name, func(t *testing.T) { h.test(t, c, db, conn) })
	}
}

// sqlError runs query expecting it to fail, and returns the server error.
func sqlError(t *testing.T, conn *pgx.Conn, query string, args ...any) *pgconn.PgError {
	t.Helper()
	var ignored any
	err := conn.QueryRow(ctxT(t), query, args...).Scan(&ignored)
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		t.Fatalf("%s %v: want a server error, got %v (result %v)", query, args, err, ignored)
	}
	return pg
}

func testSQLConninfo(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	for _, c := range []struct {
		dsn  string
		want string // keyword=value pairs in order, joined by " | "
	}{
		{`host=h1 port=5432 dbname = 'my db' user=u`, `host=h1 | port=5432 | dbname=my db | user=u`},
		{`  host = h1   dbname=x  `, `host=h1 | dbname=x`},
		{`dbname='it\'s' password='p w\\x'`, `dbname=it's | password=p w\x`},
		{`dbname=a\ b host=h`, `dbname=a b | host=h`},
		{`dbname='' host=h`, `dbname= | host=h`},
		{`dbname='a=b c' options='-c search_path=x'`, `dbname=a=b c | options=-c search_path=x`},
		{`postgresql://u:p%40ss@h1:5432,h2/my%20db?sslmode=require`,
			`user=u | password=p@ss | host=h1,h2 | port=5432, | dbname=my db | sslmode=require`},
		{`postgres://h1`, `host=h1`},
		{`postgresql://[::1]:5433/db`, `host=::1 | port=5433 | dbname=db`},
		{`postgresql:///db?host=/var/run/postgresql`, `dbname=db | host=/var/run/postgresql`},
		{`postgresql://u@h/d?application_name=a%20b&connect_timeout=5`, `user=u | host=h | dbname=d | application_name=a b | connect_timeout=5`},
		{`postgres://h/%C3%A9t%C3%A9`, `host=h | dbname=été`},
		{`postgresql://u:pa?ss@h/d`, `user=u | password=pa?ss | host=h | dbname=d`},
		{`password=a\ b\\c host=h`, `password=a b\c | host=h`},
		{`postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db`, `host=/var/run/postgresql | port=5433 | dbname=db`},
		{`dbname= host=h`, `dbname=host=h`}, // as libpq: the value starts after the blanks
	} {
		var got string
		err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(keyword || '=' || value, ' | '), '') FROM zodan_ci.zodan_conninfo($1)`, c.dsn).Scan(&got)
		if err != nil {
			t.Errorf("zodan_conninfo(%s): %v", c.dsn, err)
			continue
		}
		if got != c.want {
			t.Errorf("zodan_conninfo(%s)\n got %s\nwant %s", c.dsn, got, c.want)
		}
	}
	for _, c := range []struct{ dsn, msg, secret string }{
		{`host=h1 dbname`, `missing "=" after "dbname"`, ""},
		{`host=h1 password='sec ret`, `unterminated quoted value for "password"`, "sec ret"},
		{`postgresql://h/d?sslmode`, `parameter without "="`, ""},
		{`postgresql://h/%zz`, `bad percent-encoding`, ""},
		{`POSTGRESQL://h/db`, `missing "=" after`, ""}, // libpq reads the scheme case-sensitively
	} {
		e := sqlError(t, conn, `SELECT count(*) FROM zodan_ci.zodan_conninfo($1)`, c.dsn)
		if e.Code != "22023" || !strings.Contains(e.Message, c.msg) {
			t.Errorf("zodan_conninfo(%s): %s %q, want 22023 with %q", c.dsn, e.Code, e.Message, c.msg)
		}
		if c.secret != "" && strings.Contains(e.Message+e.Detail+e.Hint+e.Where, c.secret) {
			t.Errorf("zodan_conninfo(%s): the error shows the password: %+v", c.dsn, e)
		}
	}
}

func testSQLDSNDbname(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	for _, c := range []struct {
		dsn  string
		want *string
	}{
		{`host=h1 dbname = 'my db'`, ptr("my db")},
		{`dbname='it\'s here' host=h`, ptr("it's here")},
		{`dbname=a\ b`, ptr("a b")},
		{`dbname=first host=h dbname=second`, ptr("second")}, // libpq: the last one wins
		{`postgresql://u:p%40ss@h1:5432,h2/my%20db?sslmode=require`, ptr("my db")},
		{`postgresql://h1/path?dbname=query`, ptr("query")},
		{`host=h1 user=u`, nil},
		{`postgresql://u@h1:5432`, nil},
		{`postgresql://h1/`, nil},
		{`postgresql://h1/?sslmode=disable`, nil},
		{``, nil},
	} {
		var got *string
		if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_dsn_dbname($1)`, c.dsn).Scan(&got); err != nil {
			t.Errorf("zodan_dsn_dbname(%q): %v", c.dsn, err)
			continue
		}
		if show(got) != show(c.want) {
			t.Errorf("zodan_dsn_dbname(%q) = %s, want %s", c.dsn, show(got), show(c.want))
		}
	}
}

func testSQLRedact(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	for _, c := range []struct {
		in, want string
		secret   string
	}{
		{`host=h password=secret1 dbname=x`, `host=h password=******** dbname=x`, "secret1"},
		{`password = 'sec ret\'2' host=h`, `password = '********' host=h`, "ret"},
		{`PASSWORD=Upper3 host=h`, `PASSWORD=******** host=h`, "Upper3"},
		{`sslpassword=keypass4 sslmode=verify-full`, `sslpassword=******** sslmode=verify-full`, "keypass4"},
		{`could not connect: "postgresql://u:s3cr3t5@h1:5432/db" failed`, `could not connect: "postgresql://u:********@h1:5432/db" failed`, "s3cr3t5"},
		{`postgres://admin:p%40ss6@h1,h2/my%20db?sslmode=require`, `postgres://admin:********@h1,h2/my%20db?sslmode=require`, "ss6"},
		{`host=h dbname=x user=u`, `host=h dbname=x user=u`, ""},
		{`postgresql://u@h1/db`, `postgresql://u@h1/db`, ""},
	} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_redact($1)`, c.in).Scan(&got); err != nil {
			t.Errorf("zodan_redact(%s): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("zodan_redact(%s)\n got %s\nwant %s", c.in, got, c.want)
		}
		if c.secret != "" && strings.Contains(got, c.secret) {
			t.Errorf("zodan_redact(%s) shows the password: %s", c.in, got)
		}
	}
	// A password given as a URI query parameter is hidden too.
	var got string
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_redact($1)`, `postgresql://h/db?password=qsecret7&sslmode=require`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "qsecret7") || !strings.HasPrefix(got, "postgresql://h/db?password=********") {
		t.Errorf("zodan_redact of a URI with ?password=: %s", got)
	}
	var null *string
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_redact(NULL)`).Scan(&null); err != nil || null != nil {
		t.Errorf("zodan_redact(NULL) = %s, %v; want NULL", show(null), err)
	}
}

func testSQLDSNDisplay(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	for _, c := range []struct {
		dsn, want, secret string
	}{
		{`host=h1 port=5432 dbname=app user=u password=secret1`, `host=h1 port=5432 dbname=app user=u`, "secret1"},
		{`password='p w2' host=h1 dbname = 'my db'`, `host=h1 dbname=my db`, "p w2"},
		{`postgresql://u:p%40ss3@h1:5432,h2/my%20db?sslmode=require`, `host=h1,h2 port=5432, dbname=my db user=u`, "ss3"},
		{`postgresql://h/db?password=qs4`, `host=h dbname=db`, "qs4"},
		{`service=prod password=sv5`, `service=prod`, "sv5"},
		{`password=only6`, `(DSN with defaults only)`, "only6"},
		{`host=h password='unterminated secret7`, `(unparsable DSN)`, "secret7"},
	} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_dsn_display($1)`, c.dsn).Scan(&got); err != nil {
			t.Errorf("zodan_dsn_display(%s): %v", c.dsn, err)
			continue
		}
		if got != c.want {
			t.Errorf("zodan_dsn_display(%s)\n got %s\nwant %s", c.dsn, got, c.want)
		}
		if strings.Contains(got, c.secret) {
			t.Errorf("zodan_dsn_display(%s) shows the password: %s", c.dsn, got)
		}
	}
	var got string
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_dsn_display(NULL)`).Scan(&got); err != nil || got != "(no DSN)" {
		t.Errorf("zodan_dsn_display(NULL) = %q, %v; want (no DSN)", got, err)
	}
}

func testSQLDSNWithDefault(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	for _, c := range []struct{ dsn, want string }{
		{`host=h`, `host=h connect_timeout='10'`},
		{`host=h connect_timeout=3`, `host=h connect_timeout=3`},
		// A URI is rewritten as keywords: its password may hold a '?'.
		{`postgresql://h/db`, `host='h' dbname='db' connect_timeout='10'`},
		{`postgresql://u:p?w'x@h/db?sslmode=require`, `user='u' password='p?w\'x' host='h' dbname='db' sslmode='require' connect_timeout='10'`},
		{`postgresql://h/db?connect_timeout=2`, `postgresql://h/db?connect_timeout=2`},
	} {
		var got string
		if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_dsn_with_default($1, 'connect_timeout', '10')`, c.dsn).Scan(&got); err != nil {
			t.Errorf("zodan_dsn_with_default(%s): %v", c.dsn, err)
			continue
		}
		if got != c.want {
			t.Errorf("zodan_dsn_with_default(%s) = %s, want %s", c.dsn, got, c.want)
		}
	}
}

func testSQLSyncTimeout(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	const def = 600 // render.DefaultSyncTimeout, as installed by installedDB
	t.Cleanup(func() { _, _ = conn.Exec(ctx, "RESET spock.sync_timeout") })
	for _, c := range []struct {
		setting  string // "" = not set in the session
		argument string // SQL expression for the argument
		want     int
	}{
		{"", "NULL", def},
		{"", "DEFAULT", def},
		{"90", "NULL", 90},
		{"2 min", "NULL", 120},
		{"90s", "NULL", 90},
		{"1h", "NULL", 3600},
		{"0", "NULL", def},
		{"2 min", "interval '5 minutes'", 300},
		{"soon", "interval '45 seconds'", 45},
		{"", "interval '1.5 seconds'", 2},
	} {
		t.Run(fmt.Sprintf("setting=%q/arg=%s", c.setting, c.argument), func(t *testing.T) {
			if _, err := conn.Exec(ctx, "RESET spock.sync_timeout"); err != nil {
				t.Fatal(err)
			}
			if c.setting != "" {
				if _, err := conn.Exec(ctx, "SELECT set_config('spock.sync_timeout', $1, false)", c.setting); err != nil {
					t.Fatal(err)
				}
			}
			q := "SELECT zodan_ci.zodan_sync_timeout(" + c.argument + ")"
			if c.argument == "DEFAULT" {
				q = "SELECT zodan_ci.zodan_sync_timeout()"
			}
			var got int
			if err := conn.QueryRow(ctx, q).Scan(&got); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			if got != c.want {
				t.Errorf("%s with spock.sync_timeout = %q: %d, want %d", q, c.setting, got, c.want)
			}
		})
	}
	t.Run("garbage setting", func(t *testing.T) {
		if _, err := conn.Exec(ctx, "SET spock.sync_timeout = 'soon'"); err != nil {
			t.Fatal(err)
		}
		e := sqlError(t, conn, "SELECT zodan_ci.zodan_sync_timeout(NULL)")
		if e.Code != "22023" || !strings.Contains(e.Message, `spock.sync_timeout is set to "soon"`) {
			t.Errorf("got %s %q, want 22023 naming the setting", e.Code, e.Message)
		}
		if e.Hint == "" {
			t.Error("no hint on how to set it")
		}
	})
	for _, arg := range []string{"interval '0'", "interval '-1 minute'"} {
		t.Run("argument "+arg, func(t *testing.T) {
			if _, err := conn.Exec(ctx, "RESET spock.sync_timeout"); err != nil {
				t.Fatal(err)
			}
			e := sqlError(t, conn, "SELECT zodan_ci.zodan_sync_timeout("+arg+")")
			if e.Code != "22023" || !strings.Contains(e.Message, "sync_timeout must be positive") {
				t.Errorf("got %s %q, want 22023 'sync_timeout must be positive'", e.Code, e.Message)
			}
		})
	}
}

// zodan_connect and the remote helpers over dblink, to this very
// database: passwords reach neither the error nor the server log.
func testSQLRemoteHelpers(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)

	if _, err := conn.Exec(ctx, `SELECT zodan_ci.zodan_connect('n1', $1, 'zodan test', 10)`, c.DSN(db)); err != nil {
		t.Fatalf("zodan_connect to this database: %v", err)
	}
	var remoteDB, app string
	var connected bool
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_value('n1', 'SELECT current_database()'), zodan_ci.zodan_value('n1', 'SELECT current_setting(''application_name'')'),
		zodan_ci.zodan_connected('n1')`).Scan(&remoteDB, &app, &connected); err != nil {
		t.Fatal(err)
	}
	if remoteDB != db || app != "zodan test" || !connected {
		t.Errorf("over the zodan connection: database %q, application_name %q, connected %v", remoteDB, app, connected)
	}
	e := sqlError(t, conn, `SELECT zodan_ci.zodan_value('n1', 'SELECT 1/0')`)
	if e.Code != "22012" || e.Message != "on node n1: division by zero" {
		t.Errorf("remote error: %s %q, want 22012 %q", e.Code, e.Message, "on node n1: division by zero")
	}
	e = sqlError(t, conn, `SELECT zodan_ci.zodan_exec('n1', 'CREATE TABLE nope (')`)
	if e.Code != "42601" || !strings.HasPrefix(e.Message, "on node n1: syntax error") {
		t.Errorf("remote syntax error: %s %q", e.Code, e.Message)
	}
	if _, err := conn.Exec(ctx, `SELECT zodan_ci.zodan_disconnect_all()`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_connected('n1')`).Scan(&connected); err != nil || connected {
		t.Errorf("after zodan_disconnect_all: connected %v, %v", connected, err)
	}

	// Nothing listens on this port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	const wrongPassword = "wrong-Pw-4711"
	for _, c := range []struct {
		name, dsn, secret, wantDisplay string
	}{
		{"node down", fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=postgres password=%s", deadPort, db, pgtest.SharedPassword),
			pgtest.SharedPassword, fmt.Sprintf("(host=127.0.0.1 port=%d dbname=%s user=postgres)", deadPort, db)},
		{"wrong password", fmt.Sprintf("postgresql://postgres:%s@127.0.0.1:%d/%s", wrongPassword, c.Port, db),
			wrongPassword, fmt.Sprintf("(host=127.0.0.1 port=%d dbname=%s user=postgres)", c.Port, db)},
	} {
		e := sqlError(t, conn, `SELECT zodan_ci.zodan_connect('n9', $1, 'zodan test', 10)`, c.dsn)
		all := strings.Join([]string{e.Message, e.Detail, e.Hint, e.Where}, "\n")
		if !strings.Contains(e.Message, "cannot connect to node n9 "+c.wantDisplay) {
			t.Errorf("%s: message %q, want it to name the node and %s", c.name, e.Message, c.wantDisplay)
		}
		if !strings.HasPrefix(e.Code, "08") {
			t.Errorf("%s: SQLSTATE %s, want a connection exception (08xxx)", c.name, e.Code)
		}
		if strings.Contains(all, c.secret) {
			t.Errorf("%s: the error shows the password:\n%s", c.name, all)
		}
	}
	if log := c.ReadLog(); strings.Contains(log, pgtest.SharedPassword) || strings.Contains(log, wrongPassword) {
		t.Errorf("the server log contains a password")
	}
}

func ptr(s string) *string { return &s }

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *s)
}

// testSQLMaskingMatchesGo holds zodan_redact and zodan_dsn_display to Go's
// dsn.Mask and dsn.Display on the shared corpus and on every input the
// fuzzers have saved: one algorithm, written twice, must not drift.
func testSQLMaskingMatchesGo(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	inputs, err := dsn.LoadCorpus(filepath.Join("..", "dsn", "testdata", "corpus.txt"))
	if err != nil {
		t.Fatal(err)
	}
	saved, _ := filepath.Glob(filepath.Join("..", "dsn", "testdata", "fuzz", "*", "*"))
	for _, f := range saved {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// go test fuzz v1 / string("...")
		for _, line := range strings.Split(string(b), "\n") {
			if q, ok := strings.CutPrefix(line, "string("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
					inputs = append(inputs, s)
				}
			}
		}
	}
	compared := 0
	for _, in := range inputs {
		if !utf8.ValidString(in) || strings.ContainsRune(in, 0) {
			continue // not representable as SQL text
		}
		var redacted, display string
		if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_redact($1), zodan_ci.zodan_dsn_display($1)`, in).Scan(&redacted, &display); err != nil {
			t.Errorf("zodan_redact(%q): %v", in, err)
			continue
		}
		if want := dsn.Mask(in); redacted != want {
			t.Errorf("zodan_redact(%q)\n got %q\nGo's %q", in, redacted, want)
		}
		if want := dsn.Display(in); display != want {
			t.Errorf("zodan_dsn_display(%q)\n got %q\nGo's %q", in, display, want)
		}
		compared++
	}
	if compared < 40 {
		t.Fatalf("compared %d inputs only: corpus not found?", compared)
	}
	t.Logf("SQL and Go agree on %d inputs", compared)
}

// Spock 5.0's sub_show_status() can call a replicating subscription
// "down" (a stale worker entry ahead of its running worker). The gathered
// facts take the provider's word: its slot is active only while the
// subscription's apply worker streams from it. Nothing else is corrected.
func testSQLCorrectSubStatus(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	ctx := ctxT(t)
	facts := `{
	  "n1": {"spock": "5.0.11", "active_slots": []},
	  "n2": {"spock": "5.0.11", "active_slots": ["spk_app_n2_sub_n2_n3"], "subscriptions": []},
	  "n3": {"spock": "5.0.11", "active_slots": [], "subscriptions": [
	    {"name": "sub_n1_n3", "provider": "n1", "slot": "spk_app_n1_sub_n1_n3", "enabled": true, "ready": true, "status": "down"},
	    {"name": "sub_n2_n3", "provider": "n2", "slot": "spk_app_n2_sub_n2_n3", "enabled": true, "ready": true, "status": "down"},
	    {"name": "sub_n4_n3", "provider": "n4", "slot": "spk_app_n4_sub_n4_n3", "enabled": true, "ready": true, "status": "down"}]},
	  "n5": {"spock": "5.0.11", "active_slots": [], "subscriptions": [
	    {"name": "sub_n2_n5", "provider": "n2", "slot": "spk_app_n2_sub_n2_n3", "enabled": false, "ready": true, "status": "down"},
	    {"name": "sub_n2_n5b", "provider": "n2", "slot": "spk_app_n2_sub_n2_n3", "enabled": true, "ready": false, "status": "down"},
	    {"name": "sub_n2_n5c", "provider": "n2", "slot": "spk_app_n2_sub_n2_n3", "enabled": true, "ready": true, "status": "initializing"}]},
	  "n6": {"pgnum": 150018}
	}`
	var got map[string]map[string]any
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_correct_sub_status($1::jsonb)`, facts).Scan(&got); err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for node, f := range got {
		subs, _ := f["subscriptions"].([]any)
		for _, s := range subs {
			m := s.(map[string]any)
			status[node+"/"+m["name"].(string)] = fmt.Sprint(m["status"], " ", m["spock_status"])
		}
	}
	want := map[string]string{
		"n3/sub_n1_n3":  "down <nil>",         // n1's slot is not active
		"n3/sub_n2_n3":  "replicating down",   // n2 streams it: Spock's "down" is stale
		"n3/sub_n4_n3":  "down <nil>",         // nothing known of n4
		"n5/sub_n2_n5":  "down <nil>",         // disabled
		"n5/sub_n2_n5b": "down <nil>",         // still in its initial copy
		"n5/sub_n2_n5c": "initializing <nil>", // only "down" is ever corrected
	}
	if fmt.Sprint(status) != fmt.Sprint(want) {
		t.Errorf("corrected statuses:\n got %v\nwant %v", status, want)
	}
	if got["n6"]["pgnum"] != float64(150018) || got["n1"]["subscriptions"] != nil || len(got) != 5 {
		t.Errorf("facts other than subscriptions changed: %v", got)
	}

	// The live check asks the provider, and says no for a node it has no
	// connection to or a slot that does not exist.
	var streaming, unknown bool
	if _, err := conn.Exec(ctx, `SELECT zodan_ci.zodan_connect('n1', $1, 'zodan test', 10)`, c.DSN(db)); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `SELECT zodan_ci.zodan_disconnect_all()`)
	if err := conn.QueryRow(ctx, `SELECT zodan_ci.zodan_slot_streaming('n1', 'no_such_slot'), zodan_ci.zodan_slot_streaming('n9', 'x')`).Scan(&streaming, &unknown); err != nil {
		t.Fatal(err)
	}
	if streaming || unknown {
		t.Errorf("zodan_slot_streaming: missing slot %v, unconnected node %v; want false, false", streaming, unknown)
	}
}
