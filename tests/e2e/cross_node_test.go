//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// Scenario: a node joins while the cluster does what multi-master users
// do. Orders are inserted on n2 and n3, marked paid on n1 moments after
// they arrive there, and deleted on n3 once paid; every node appends to a
// table without a primary key; 500,000 rows make the copy last several
// seconds; Spock runs with its default exception_behaviour
// (transdiscard) and every statement is logged with its duration.
//
// The new node must end with exactly the rows and values of the others in
// every table, no node may have discarded a transaction
// (spock.exception_log empty, no "did not find row" in any log), and
// health_check('post') must pass.
func TestJoinKeepsCrossNodeChanges(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")
	n4 := nodes(t, "n4")[0]
	all := append(c.Nodes, n4)
	ctx := testContext(t)
	for _, n := range all {
		// Verbose logging, as production servers often have it; and
		// Spock's default exception handling, stated explicitly.
		exec(t, n, `ALTER SYSTEM SET log_min_duration_statement = 0`)
		exec(t, n, `SELECT pg_reload_conf()`)
		if got := value[string](t, n, `SELECT current_setting('spock.exception_behaviour')`); got != "transdiscard" {
			t.Fatalf("%s runs spock.exception_behaviour = %s, want Spock's default transdiscard", n.Name, got)
		}
	}

	exec(t, n1, spocktest.CrossLoadSchema)
	exec(t, n1, `CREATE TABLE history (id bigint PRIMARY KEY, payload text NOT NULL)`)
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "history", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if set := value[string](t, n1, `SELECT coalesce(string_agg(set_name, ','), 'none') FROM spock.tables WHERE relname = 'events'`); set != "default_insert_only" {
		t.Fatalf("events (no primary key) is in replication set %s on n1, want default_insert_only", set)
	}
	exec(t, n1, `INSERT INTO history SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 500000) g`)
	if _, err := spocktest.Identical(ctx, c.Nodes, convergeLimit); err != nil {
		t.Fatalf("before the join: %v", err)
	}

	load, err := spocktest.StartCrossLoad(ctx, spocktest.CrossLoadRoles{
		Inserters: []*spocktest.Node{n2, n3}, Payer: n1, Deleter: n3,
		Settle: 300 * time.Millisecond, Rate: 25,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Let the workload reach a steady state before the join starts.
	if err := spocktest.Poll(ctx, time.Minute, func() (bool, string, error) {
		n, err := spocktest.QueryValue[int64](ctx, n3, `SELECT count(*) FROM orders WHERE status = 'paid'`)
		return n >= 20, fmt.Sprintf("%d paid orders on n3", n), err
	}); err != nil {
		load.Stop()
		t.Fatal(err)
	}
	call := n4.AddNode(ctx, n1)
	if call.Err != nil {
		load.Stop()
		mustSucceed(t, "add_node n4 during cross-node writes", call)
	}
	// Keep going a while with the new node in the mesh.
	exec(t, n4, `INSERT INTO events (origin, seq, note) VALUES ('n4', 1, 'after join')`)
	eventsAtJoin := value[int64](t, n1, `SELECT count(*) FROM events WHERE origin = 'n1'`)
	if err := spocktest.Poll(ctx, time.Minute, func() (bool, string, error) {
		n, err := spocktest.QueryValue[int64](ctx, n1, `SELECT count(*) FROM events WHERE origin = 'n1'`)
		return n >= eventsAtJoin+50, fmt.Sprintf("%d payer rounds since the join", n-eventsAtJoin), err
	}); err != nil {
		load.Stop()
		t.Fatal(err)
	}
	res := load.Stop()
	res.Events["n4"] = 1
	mustSucceed(t, "add_node n4 during cross-node writes", call)
	for _, e := range res.Errors {
		t.Errorf("a client saw an error: %v", e)
	}
	t.Logf("load: orders inserted %v, %d paid on n1, %d deleted on n3; events %v", res.Orders, res.Paid, res.Deleted, res.Events)
	if res.Paid == 0 || res.Deleted == 0 {
		t.Fatalf("the load did not exercise cross-node changes: %d paid, %d deleted", res.Paid, res.Deleted)
	}

	digests, err := spocktest.Identical(ctx, all, convergeLimit)
	if err != nil {
		t.Error(err)
	}
	for _, n := range all {
		var parts []string
		for _, tbl := range []string{"public.history", "public.orders", "public.events"} {
			parts = append(parts, fmt.Sprintf("%s %d", strings.TrimPrefix(tbl, "public."), digests[n.Name][tbl].Rows))
		}
		t.Logf("%s: %s", n.Name, strings.Join(parts, ", "))
	}

	exactlyTheCommittedRows(t, res, all)
	for _, n := range all {
		if log := n.Cluster.ReadLog(); strings.Contains(log, "did not find row") {
			t.Errorf("%s's server log has %d \"did not find row\" lines", n.Name, strings.Count(log, "did not find row"))
		}
	}
	if bad, err := (&spocktest.Cluster{Nodes: all}).NotReplicating(ctx, n4); err != nil || len(bad) > 0 {
		t.Errorf("n4 has subscriptions that do not replicate: %v %v", bad, err)
	}
	post := n4.Call(ctx, `CALL spock.health_check('n1', $1, 'n4', $2, 'post')`, n1.DSN(), n4.DSN())
	mustSucceed(t, "health_check post on n4", post)
	if !strings.Contains(post.Messages(), "PASS discarded-transactions") || !strings.Contains(post.Messages(), "PASS row-counts") {
		t.Errorf("health_check('post') did not compare n4 with n1:\n%s", post.Messages())
	}
	out := call.Messages()
	for _, want := range []string{"phase 7/10 hand-over", "phase 10/10 compare", "discarded-transactions: no new entries"} {
		if !strings.Contains(out, want) {
			t.Errorf("add_node's progress lacks %q:\n%s", want, out)
		}
	}
}

// exactlyTheCommittedRows checks every node against what the cross-node
// load committed: every order (less the deleted ones) and every event of
// every origin, none lost and none applied twice, and no transaction
// discarded (spock.exception_log is empty).
func exactlyTheCommittedRows(t *testing.T, res spocktest.CrossLoadResult, ns []*spocktest.Node) {
	t.Helper()
	var wantOrders int64
	for _, v := range res.Orders {
		wantOrders += v
	}
	wantOrders -= res.Deleted
	for _, n := range ns {
		if got := value[int64](t, n, `SELECT count(*) FROM orders`); got != wantOrders {
			t.Errorf("%s has %d orders, want %d (%v inserted, %d deleted)", n.Name, got, wantOrders, res.Orders, res.Deleted)
		}
		for origin, want := range res.Events {
			if got := value[int64](t, n, `SELECT count(*) FROM events WHERE origin = $1`, origin); got != want {
				t.Errorf("%s has %d events from %s, want %d", n.Name, got, origin, want)
			}
		}
		if got := value[int64](t, n, `SELECT count(*) FROM spock.exception_log`); got != 0 {
			t.Errorf("%s's spock.exception_log has %d entries: %s", n.Name, got,
				value[string](t, n, `SELECT string_agg(DISTINCT error_message, ' | ') FROM spock.exception_log`))
		}
	}
}
