package installcli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/installcli"
	"github.com/zodan-project/zodan/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	if down.c != nil {
		_ = down.c.Destroy()
	}
	os.Exit(code)
}

// testSchema receives the procedures: plain PostgreSQL has no spock
// schema, and zodan-install accepts any existing schema without Spock.
const testSchema = "zodan_ci"

// downPassword is the superuser password of the stopped node.
const downPassword = "pw-of-the-down-node-8Hq"

var down struct {
	once sync.Once
	c    *pgtest.Cluster
	err  error
}

// stoppedNode is a cluster that was initialised and run once, then shut
// down: a node that is down. It is shared by the tests of this package.
func stoppedNode(t *testing.T) *pgtest.Cluster {
	t.Helper()
	down.once.Do(func() {
		c, err := pgtest.New(pgtest.Options{Name: "down", Password: downPassword})
		if err == nil {
			down.c = c
			if err = c.Start(); err == nil {
				err = c.Stop()
			}
		}
		down.err = err
	})
	if down.err != nil {
		t.Fatalf("stopped node: %v", down.err)
	}
	return down.c
}

// result is what one zodan-install run showed the user.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("zodan-install %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(maskArgs(r.args), " "), r.code, r.stdout, r.stderr)
}

// maskArgs hides the passwords this package uses, so that a failure
// message does not itself print what the tests check is never printed.
func maskArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, pgtest.SharedPassword, "<password>")
		out[i] = strings.ReplaceAll(a, downPassword, "<password>")
	}
	return out
}

// run runs zodan-install in-process, and fails the test if the output
// holds a password: no command may ever print one.
func run(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := installcli.Main(append([]string{"zodan-install"}, args...), &stdout, &stderr)
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String(), code: code}
	for _, pw := range []string{pgtest.SharedPassword, downPassword} {
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Errorf("zodan-install printed a password:\n%s", strings.ReplaceAll(r.String(), pw, "<PASSWORD LEAKED HERE>"))
		}
	}
	return r
}

// runOK runs zodan-install and fails the test unless it exits 0.
func runOK(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// wantLine fails the test unless stdout has a line label + ": " + want.
func wantLine(t *testing.T, r result, label, want string) {
	t.Helper()
	line := label + ": " + want
	for _, l := range strings.Split(r.stdout, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("output lacks the line %q:\n%s", line, r)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// node is one database on the shared cluster prepared for zodan.
type node struct {
	c     *pgtest.Cluster
	db    string
	dsn   string // with the password
	label string // how zodan-install names it
}

func newNode(t *testing.T) node {
	t.Helper()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	return node{c: c, db: db, dsn: c.DSN(db), label: fmt.Sprintf("127.0.0.1:%d/%s", c.Port, db)}
}

func (n node) query(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	conn := n.c.Connect(t, n.db)
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctxT(t), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func (n node) value(t *testing.T, sql string, args ...any) string {
	t.Helper()
	rows := n.query(t, sql, args...)
	if len(rows) != 1 {
		t.Fatalf("%s: %d rows, want 1", sql, len(rows))
	}
	return rows[0]
}

// catalog lists the user-visible objects of the database by name and
// kind: schemas, relations, routines, types and extensions.
func (n node) catalog(t *testing.T) []string {
	t.Helper()
	return n.query(t, `
		WITH ns AS (
		    SELECT oid, nspname FROM pg_namespace
		     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
		       AND nspname !~ '^pg_(toast_)?temp_')
		SELECT 'schema ' || nspname FROM ns
		UNION ALL
		SELECT format('relation %s.%s (%s)', ns.nspname, c.relname, c.relkind)
		  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
		UNION ALL
		SELECT format('routine %s.%s(%s) (%s)', ns.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind)
		  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
		UNION ALL
		SELECT format('type %s.%s (%s)', ns.nspname, t.typname, t.typtype)
		  FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
		UNION ALL
		SELECT format('extension %s %s in %s', e.extname, e.extversion, n.nspname)
		  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		ORDER BY 1`)
}

func (n node) hasRelation(t *testing.T, name string) bool {
	t.Helper()
	return n.value(t, `SELECT (to_regclass($1) IS NOT NULL)::text`, name) == "true"
}

// catalogDiff lists what is only in a ("-") or only in b ("+").
func catalogDiff(a, b []string) string {
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for _, x := range a {
		if !mb[x] {
			d = append(d, "- "+x)
		}
	}
	for _, x := range b {
		if !ma[x] {
			d = append(d, "+ "+x)
		}
	}
	return strings.Join(d, "\n")
}
