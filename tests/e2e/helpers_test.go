//go:build e2e

// Package e2e tests zodan against real Spock clusters. Run with
// "make test-e2e" and ZODAN_SPOCK_BINDIR set; without it every test skips
// and says how to set it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/spocktest"
)

// convergeLimit bounds how long replication may take to drain in a test.
const convergeLimit = 3 * time.Minute

var binDir string

func TestMain(m *testing.M) {
	dir, ok, err := spocktest.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if !ok {
		fmt.Println("SKIP: " + spocktest.SkipMessage)
	}
	binDir = dir
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

func requireSpock(t *testing.T) {
	t.Helper()
	if binDir == "" {
		t.Skip(spocktest.SkipMessage)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mesh starts a fully connected cluster; t.Cleanup destroys it.
func mesh(t *testing.T, names ...string) *spocktest.Cluster {
	t.Helper()
	return meshWith(t, spocktest.NodeOptions{}, names...)
}

// meshWith is mesh with options for every node.
func meshWith(t *testing.T, opts spocktest.NodeOptions, names ...string) *spocktest.Cluster {
	t.Helper()
	requireSpock(t)
	c, err := spocktest.NewMeshWith(testContext(t), binDir, opts, names...)
	if err != nil {
		t.Fatalf("starting cluster %v: %v", names, err)
	}
	for _, line := range c.SetupCrashes {
		t.Logf("building the cluster was tried again after a Spock node crashed: %s", line)
	}
	t.Cleanup(func() { keepOnFailure(t, c.Nodes...) })
	return c
}

// nodes starts unregistered Spock nodes; t.Cleanup destroys them.
func nodes(t *testing.T, names ...string) []*spocktest.Node {
	t.Helper()
	requireSpock(t)
	ns, err := spocktest.StartNodes(testContext(t), binDir, names...)
	if err != nil {
		t.Fatalf("starting nodes %v: %v", names, err)
	}
	t.Cleanup(func() { keepOnFailure(t, ns...) })
	return ns
}

// keepOnFailure ends a test's nodes: it reports any server process that
// crashed (with gdb's backtrace when the core is there), shows the log
// tails of a failed test, and keeps the directories when asked.
func keepOnFailure(t *testing.T, ns ...*spocktest.Node) {
	for _, n := range ns {
		if report := n.Cluster.CrashReport(); report != "" {
			t.Logf("%s: a server process crashed during this test:\n%s", n.Name, report)
		}
		if t.Failed() {
			t.Logf("%s log tail:\n%s", n.Name, n.Cluster.LogTail(40))
		}
		if t.Failed() && os.Getenv("ZODAN_TEST_KEEP") != "" {
			t.Logf("keeping %s in %s", n.Name, n.Cluster.Dir)
			n.Cluster.Stop()
			continue
		}
		n.Cluster.Destroy()
	}
}

func exec(t *testing.T, n *spocktest.Node, sql string, args ...any) {
	t.Helper()
	if err := n.Exec(testContext(t), spocktest.Database, sql, args...); err != nil {
		t.Fatal(err)
	}
}

func value[T any](t *testing.T, n *spocktest.Node, sql string, args ...any) T {
	t.Helper()
	v, err := spocktest.QueryValue[T](testContext(t), n, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mustSucceed fails the test when a CALL failed, showing its progress.
func mustSucceed(t *testing.T, what string, c spocktest.Call) {
	t.Helper()
	if c.Err != nil {
		t.Fatalf("%s failed after %s: %s\nprogress:\n%s", what, c.Elapsed.Round(time.Millisecond), dbconn.Describe(c.Err), c.Messages())
	}
	t.Logf("%s took %s", what, c.Elapsed.Round(time.Millisecond))
}

// mustFail checks that a CALL failed with sqlstate and a message that
// contains every one of wants.
func mustFail(t *testing.T, what string, c spocktest.Call, sqlstate string, wants ...string) *pgconn.PgError {
	t.Helper()
	if c.Err == nil {
		t.Fatalf("%s succeeded, want failure %s\nprogress:\n%s", what, sqlstate, c.Messages())
	}
	pg, ok := c.Err.(*pgconn.PgError)
	if !ok {
		t.Fatalf("%s failed with a non-server error: %v", what, c.Err)
	}
	full := dbconn.Describe(c.Err)
	if sqlstate != "" && pg.Code != sqlstate {
		t.Errorf("%s failed with SQLSTATE %s, want %s: %s", what, pg.Code, sqlstate, full)
	}
	for _, w := range wants {
		if !strings.Contains(full, w) {
			t.Errorf("%s: error does not say %q:\n%s", what, w, full)
		}
	}
	return pg
}

// rowsEverywhere inserts one row on each node and waits until every node
// has every row: replication works both ways between every pair.
func rowsEverywhere(t *testing.T, tag string, ns ...*spocktest.Node) {
	t.Helper()
	ctx := testContext(t)
	for _, n := range ns {
		exec(t, n, `INSERT INTO pairs (origin, tag) VALUES ($1, $2)`, n.Name, tag)
	}
	err := spocktest.Poll(ctx, convergeLimit, func() (bool, string, error) {
		var missing []string
		for _, n := range ns {
			got, err := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM pairs WHERE tag = $1`, tag)
			if err != nil {
				return false, "", err
			}
			if got != int64(len(ns)) {
				missing = append(missing, fmt.Sprintf("%s has %d/%d", n.Name, got, len(ns)))
			}
		}
		return len(missing) == 0, strings.Join(missing, ", "), nil
	})
	if err != nil {
		t.Fatalf("rows %q did not reach every node: %v", tag, err)
	}
}

const pairsTable = `CREATE TABLE pairs (origin text NOT NULL, tag text NOT NULL, PRIMARY KEY (origin, tag))`

// noTraces checks that nothing on any of ns refers to node name: no
// subscription from or to it, no slot for it, no origin, no node row, no
// replication set of it, no progress row (where Spock can remove those).
func noTraces(t *testing.T, name string, ns ...*spocktest.Node) {
	t.Helper()
	for _, n := range ns {
		traces := value[string](t, n, `
			SELECT coalesce(string_agg(x, '; '), '') FROM (
			  SELECT 'subscription ' || s.sub_name AS x FROM spock.subscription s
			    JOIN spock.node o ON o.node_id = s.sub_origin JOIN spock.node d ON d.node_id = s.sub_target
			   WHERE o.node_name = $1 OR d.node_name = $1 OR s.sub_name LIKE '%\_' || $1 OR s.sub_name LIKE 'sub\_' || $1 || '\_%'
			  UNION ALL SELECT 'node ' || node_name FROM spock.node WHERE node_name = $1
			  UNION ALL SELECT 'replication set ' || rs.set_name FROM spock.replication_set rs
			    JOIN spock.node nd ON nd.node_id = rs.set_nodeid WHERE nd.node_name = $1
			  UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
			   WHERE slot_name LIKE '%\_sub\_%\_' || $1 OR slot_name LIKE '%\_sub\_' || $1 || '\_%'
			  UNION ALL SELECT 'origin ' || roname FROM pg_replication_origin
			   WHERE roname LIKE '%\_sub\_%\_' || $1 OR roname LIKE '%\_sub\_' || $1 || '\_%'
			  -- Spock 5.0's progress table; Spock 6.0 keeps progress in
			  -- memory behind a view and has no call to remove a node's entry.
			  UNION ALL SELECT 'progress row' FROM spock.progress p
			   WHERE (SELECT relkind FROM pg_class WHERE oid = 'spock.progress'::regclass) = 'r'
			     AND (p.node_id NOT IN (SELECT node_id FROM spock.node) OR p.remote_node_id NOT IN (SELECT node_id FROM spock.node))
			) t`, name)
		if traces != "" {
			t.Errorf("%s still has traces of %s: %s", n.Name, name, traces)
		}
	}
}
