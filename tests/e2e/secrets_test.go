//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/spocktest"
)

// secret is every node's superuser password: quotes, a space, a
// backslash, the characters that end values in URIs and in naive
// maskers, and non-ASCII. "Zq9" makes a partial leak findable.
const secret = `Zq9'sé cr\et&d?@%/"x=`

// TestNoPasswordInAnyLogOrOutput runs what a DBA runs (health_check,
// add_node that fails in three ways, add_node, remove_node; in psql with
// literal DSNs and with the zodan CLI, in both DSN forms) on nodes that
// log everything they can: every statement and its duration and
// parameters, sampled statements and transactions, statements that fail,
// connections, and auto_explain of nested statements. Then it searches
// every node's server log, pg_stat_activity as sampled during the run,
// the operation journal and everything printed for the password in every
// form it can be written in. The psql CALLs' own text is the DBA's, and
// is the one thing left out of the search.
func TestNoPasswordInAnyLogOrOutput(t *testing.T) {
	requireSpock(t)
	ctx := testContext(t)
	major, err := spocktest.PostgresMajor(binDir)
	if err != nil {
		t.Fatal(err)
	}
	verbose := map[string]string{
		"shared_preload_libraries":           "'spock, auto_explain'",
		"log_statement":                      "all",
		"log_min_duration_statement":         "0",
		"log_min_duration_sample":            "0",
		"log_statement_sample_rate":          "1",
		"log_transaction_sample_rate":        "1",
		"log_min_error_statement":            "debug5",
		"log_parameter_max_length":           "-1",
		"log_parameter_max_length_on_error":  "-1",
		"log_connections":                    "on",
		"log_disconnections":                 "on",
		"log_error_verbosity":                "verbose",
		"auto_explain.log_min_duration":      "0",
		"auto_explain.log_nested_statements": "on",
		"auto_explain.log_verbose":           "on",
	}
	if major >= 16 {
		verbose["auto_explain.log_parameter_max_length"] = "-1"
	}
	opts := spocktest.NodeOptions{Password: secret, Settings: verbose}
	c, err := spocktest.NewMeshWith(ctx, binDir, opts, "n1", "n2", "n3")
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Cleanup(func() { keepOnFailure(t, c.Nodes...) })
	extra, err := spocktest.StartNodesWith(ctx, binDir, opts, "n4", "n5")
	if err != nil {
		t.Fatalf("starting n4, n5: %v", err)
	}
	t.Cleanup(func() { keepOnFailure(t, extra...) })
	n1, n4, n5 := c.Get("n1"), extra[0], extra[1]
	all := append(append([]*spocktest.Node{}, c.Nodes...), extra...)
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}

	// What the cluster's setup logged is the test's own doing; the search
	// starts here.
	offsets := map[string]int{}
	for _, n := range all {
		offsets[n.Name] = len(n.Cluster.ReadLog())
	}
	sampler := startActivitySampler(ctx, t, all)

	var printed strings.Builder // everything the CLI printed, and every notice
	var dbaCalls []string       // the text of the CALLs typed "in psql"
	cli := func(args ...string) cliRun {
		r := zodan(t, args...)
		printed.WriteString(r.stdout + r.stderr)
		return r
	}
	psql := func(on *spocktest.Node, call string) spocktest.Call {
		dbaCalls = append(dbaCalls, call)
		res := dbaCall(ctx, on, call)
		printed.WriteString(res.Messages())
		if res.Err != nil {
			printed.WriteString(describeAll(res.Err))
		}
		return res
	}
	uri := func(n *spocktest.Node) string {
		u := url.URL{Scheme: "postgresql", User: url.UserPassword("postgres", secret),
			Host: "127.0.0.1:" + strconv.Itoa(n.Cluster.Port), Path: "/" + spocktest.Database,
			RawQuery: "application_name=dba"}
		return u.String()
	}
	kv := func(n *spocktest.Node) string { return n.DSN() }
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

	// 1. n4 refuses replication connections: the checks must say so,
	// before anything exists that Spock would log the DSN for.
	setReplicationRefused(t, n4, true)
	r := cli("health-check", "--check-type", "pre", "--src-node-name", "n1", "--src-dsn", uri(n1),
		"--new-node-name", "n4", "--new-node-dsn", kv(n4))
	if r.code != 3 || !strings.Contains(r.stdout, "FAIL node-connections") || !strings.Contains(r.stdout, "n1 -> n4 (replication connection)") {
		t.Fatalf("health-check pre with n4 refusing replication connections: want FAIL node-connections naming n1 -> n4: %s", r)
	}
	res := psql(n1, fmt.Sprintf("CALL spock.health_check(check_type := 'pre', src_node_name := 'n1', src_dsn := %s, new_node_name := 'n4', new_node_dsn := %s)",
		lit(kv(n1)), lit(uri(n4))))
	if !strings.Contains(res.Messages(), "FAIL node-connections") {
		t.Fatalf("psql health_check pre: want FAIL node-connections:\n%s%v", res.Messages(), res.Err)
	}
	r = cli("add-node", "--src-node-name", "n1", "--src-dsn", kv(n1), "--new-node-name", "n4", "--new-node-dsn", uri(n4))
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "node-connections") {
		t.Fatalf("add-node with n4 refusing replication connections: want it refused by node-connections: %s", r)
	}
	noTraces(t, "n4", c.Nodes...)

	// 2. A wrong password for the source, and a source that is not there.
	wrong := strings.Replace(kv(n1), "Zq9", "Zq8", 1)
	r = cli("add-node", "--src-node-name", "n1", "--src-dsn", wrong, "--new-node-name", "n4", "--new-node-dsn", uri(n4))
	if r.code != 1 || !strings.Contains(r.stderr, "password authentication failed") {
		t.Fatalf("add-node with a wrong password for n1: %s", r)
	}
	gone := strings.Replace(uri(n1), ":"+strconv.Itoa(n1.Cluster.Port)+"/", ":1/", 1)
	res = psql(n4, fmt.Sprintf("CALL spock.add_node(src_node_name := 'n1', src_dsn := %s, new_node_name := 'n4', new_node_dsn := %s)",
		lit(gone), lit(kv(n4))))
	if res.Err == nil {
		t.Fatal("add_node from a source nothing listens for succeeded")
	}
	noTraces(t, "n4", c.Nodes...)

	// 3. The joins that work: n4 from psql, n5 with the CLI (JSON).
	setReplicationRefused(t, n4, false)
	res = psql(n4, fmt.Sprintf("CALL spock.add_node(src_node_name := 'n1', src_dsn := %s, new_node_name := 'n4', new_node_dsn := %s)",
		lit(uri(n1)), lit(kv(n4))))
	mustSucceed(t, "add_node n4 from psql", res)
	r = cli("add-node", "--json", "--src-node-name", "n1", "--src-dsn", kv(n1), "--new-node-name", "n5", "--new-node-dsn", uri(n5))
	if r.code != 0 {
		t.Fatalf("zodan add-node --json n5: %s", r)
	}
	r = cli("health-check", "--check-type", "post", "--src-node-name", "n1", "--src-dsn", uri(n1), "--new-node-name", "n5", "--new-node-dsn", kv(n5))
	if r.code != 0 {
		t.Fatalf("health-check post n5: %s", r)
	}
	res = psql(n1, fmt.Sprintf("CALL spock.remove_node(target_node_name := 'n5', target_node_dsn := %s)", lit(uri(n5))))
	mustSucceed(t, "remove_node n5 from psql", res)
	r = cli("remove-node", "--target-node-name", "n4", "--target-dsn", uri(n4))
	if r.code != 0 {
		t.Fatalf("zodan remove-node n4: %s", r)
	}

	samples, queries := sampler.stop()

	// The search.
	forms := secretForms(secret)
	leaks := 0
	report := func(where, text string) {
		for _, f := range forms {
			if i := strings.Index(text, f); i >= 0 {
				leaks++
				if leaks <= 20 {
					t.Errorf("the password (as %q) is in %s: ...%s...", f, where, around(text, i, len(f)))
				}
			}
		}
	}
	lines := 0
	for _, n := range all {
		log := n.Cluster.ReadLog()[offsets[n.Name]:]
		for _, call := range dbaCalls {
			log = strings.ReplaceAll(log, call, "<the DBA's CALL>")
		}
		lines += strings.Count(log, "\n")
		report(n.Name+"'s server log", log)
		journal := value[string](t, n, `SELECT coalesce(string_agg(to_jsonb(o)::text, E'\n'), '') FROM spock.zodan_operations o`)
		report(n.Name+"'s spock.zodan_operations", journal)
	}
	for _, q := range queries {
		report("pg_stat_activity.query", q)
	}
	report("what the CLI printed and the notices psql showed", printed.String())
	if lines < 1000 || samples < 50 {
		t.Fatalf("the search saw too little to prove anything: %d log lines, %d pg_stat_activity samples", lines, samples)
	}
	t.Logf("searched %d server log lines on %d nodes, %d pg_stat_activity samples (%d distinct queries), the journals and %d bytes of output for %d forms of the password: %d found",
		lines, len(all), samples, len(queries), printed.Len(), len(forms), leaks)
}

// secretForms are the ways a password can be written: as is, percent-
// encoded (each Go flavour and everything-encoded), backslash-escaped for
// a keyword/value string, SQL-quoted, JSON-escaped; the start of each (a
// leak cut at a quote or a space); and the marker at its start.
func secretForms(s string) []string {
	kv := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
	js, _ := json.Marshal(s)
	var all strings.Builder
	for _, b := range []byte(s) {
		fmt.Fprintf(&all, "%%%02X", b)
	}
	full := []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("u", s).String()[2:], all.String(),
		kv, strings.ReplaceAll(s, "'", "''"), strings.Trim(string(js), `"`)}
	// "Zq9" survives every encoding (and encodings of encodings, such as
	// a backslash-escaped password inside a SQL literal): it finds what
	// the list does not spell out.
	seen := map[string]bool{}
	out := []string{"Zq9"}
	for _, f := range full {
		for _, g := range []string{f, f[:6]} {
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	return out
}

func around(s string, i, n int) string {
	from, to := max(0, i-80), min(len(s), i+n+40)
	return strings.ToValidUTF8(s[from:to], "?")
}

// dbaCall runs a statement the way psql sends what a DBA typed: as plain
// text, values inline, in a session with the server's own settings.
func dbaCall(ctx context.Context, n *spocktest.Node, sql string) spocktest.Call {
	var res spocktest.Call
	var mu sync.Mutex
	cfg, err := pgx.ParseConfig(n.DSN() + " application_name=dba-psql")
	if err != nil {
		res.Err = err
		return res
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.OnNotice = func(_ *pgconn.PgConn, nt *pgconn.Notice) {
		mu.Lock()
		res.Notices = append(res.Notices, nt)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))
	start := time.Now()
	_, res.Err = conn.Exec(ctx, sql)
	res.Elapsed = time.Since(start)
	return res
}

// describeAll is an error with its detail, hint and context: what psql
// shows with \set VERBOSITY verbose.
func describeAll(err error) string {
	if pg, ok := err.(*pgconn.PgError); ok {
		return fmt.Sprintf("%s: %s\nDETAIL: %s\nHINT: %s\nCONTEXT: %s\n", pg.Severity, pg.Message, pg.Detail, pg.Hint, pg.Where)
	}
	return err.Error() + "\n"
}

// setReplicationRefused makes n refuse (or accept again) replication
// connections, as a node whose wal senders are all taken does, while it
// still accepts normal ones. (pg_hba.conf cannot do that: a logical
// replication connection matches a database, not "replication".)
func setReplicationRefused(t *testing.T, n *spocktest.Node, refuse bool) {
	t.Helper()
	if refuse {
		exec(t, n, "ALTER SYSTEM SET max_wal_senders = 0")
	} else {
		exec(t, n, "ALTER SYSTEM RESET max_wal_senders")
	}
	if err := n.Cluster.Restart(); err != nil {
		t.Fatal(err)
	}
}

// activitySampler reads pg_stat_activity on every node, over and over,
// until stopped, and keeps every distinct query text it saw (except the
// DBA's own CALL, which is the DBA's text).
type activitySampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples int
	queries map[string]bool
}

func startActivitySampler(ctx context.Context, t *testing.T, ns []*spocktest.Node) *activitySampler {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	s := &activitySampler{cancel: cancel, done: make(chan struct{}), queries: map[string]bool{}}
	var conns []*pgx.Conn
	for _, n := range ns {
		conn, err := dbconn.Connect(ctx, n.DSN(), dbconn.Options{ApplicationName: "sampler"})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	go func() {
		defer close(s.done)
		defer func() {
			for _, c := range conns {
				c.Close(context.Background())
			}
		}()
		for ctx.Err() == nil {
			for _, c := range conns {
				rows, err := c.Query(ctx, `SELECT query FROM pg_stat_activity
				                            WHERE pid <> pg_backend_pid() AND query <> ''
				                              AND NOT (application_name = 'dba-psql' AND query ILIKE 'CALL spock.%')`)
				if err != nil {
					continue
				}
				qs, _ := pgx.CollectRows(rows, pgx.RowTo[string])
				s.mu.Lock()
				s.samples++
				for _, q := range qs {
					s.queries[q] = true
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *activitySampler) stop() (int, []string) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	var qs []string
	for q := range s.queries {
		qs = append(qs, q)
	}
	return s.samples, qs
}
