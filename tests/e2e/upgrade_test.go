//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// NextBinDirEnv names the bin directory of the newer PostgreSQL + Spock a
// rolling upgrade moves to ("make test-upgrade" builds and sets both).
const NextBinDirEnv = "ZODAN_SPOCK_NEXT_BINDIR"

// TestRollingUpgrade is how DBAs would move a cluster to a new PostgreSQL
// and Spock without stopping writes: a three-node cluster of the old
// release, under cross-node writes, gains a node of the new release with
// add_node, and an old node leaves with remove_node. Where Spock cannot
// make the join (6.0 from a 5.0 source), the checks must refuse it
// clearly and change nothing. Either way every committed row ends on
// every remaining node, none twice, and no transaction was discarded.
func TestRollingUpgrade(t *testing.T) {
	requireSpock(t)
	next := os.Getenv(NextBinDirEnv)
	if next == "" {
		t.Skip(NextBinDirEnv + " is not set: it names the bin directory of the newer PostgreSQL + Spock (make test-upgrade sets it)")
	}
	ctx := testContext(t)
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")
	fresh, err := spocktest.StartNodes(ctx, next, "n4")
	if err != nil {
		t.Fatalf("starting n4 from %s: %v", next, err)
	}
	n4 := fresh[0]
	t.Cleanup(func() { keepOnFailure(t, n4) })
	versions := func(n *spocktest.Node) string {
		return value[string](t, n, `SELECT format('PostgreSQL %s, Spock %s', current_setting('server_version'),
		                                         (SELECT extversion FROM pg_extension WHERE extname = 'spock'))`)
	}
	t.Logf("cluster: %s; new node: %s", versions(n1), versions(n4))

	exec(t, n1, spocktest.CrossLoadSchema)
	exec(t, n1, `CREATE TABLE history (id bigint PRIMARY KEY, payload text NOT NULL)`)
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "history", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	exec(t, n1, `INSERT INTO history SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 100000) g`)

	// n3 writes nothing, so it can leave while the others keep writing.
	load, err := spocktest.StartCrossLoad(ctx, spocktest.CrossLoadRoles{
		Inserters: []*spocktest.Node{n2}, Payer: n1, Deleter: n2,
		Settle: 300 * time.Millisecond, Rate: 25,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() spocktest.CrossLoadResult {
		stopped = true
		return load.Stop()
	}
	defer func() {
		if !stopped {
			load.Stop()
		}
	}()
	if err := spocktest.Poll(ctx, time.Minute, func() (bool, string, error) {
		n, err := spocktest.QueryValue[int64](ctx, n2, `SELECT count(*) FROM orders WHERE status = 'paid'`)
		return n >= 20, fmt.Sprintf("%d paid orders on n2", n), err
	}); err != nil {
		t.Fatal(err)
	}

	// Spock 6.0 takes its initial copy with functions only a 6.0 provider
	// has (spock.read_peer_progress), so a node of a newer major.minor
	// cannot join from a source of the old one: the checks must say so,
	// with what to do instead, before anything is created.
	pre := n4.Call(ctx, `CALL spock.health_check('n1', $1, 'n4', $2, 'pre')`, n1.DSN(), n4.DSN())
	majorMinor := func(n *spocktest.Node) string {
		return value[string](t, n, `SELECT array_to_string((string_to_array(extversion, '.'))[1:2], '.') FROM pg_extension WHERE extname = 'spock'`)
	}
	newer := majorMinor(n4) != majorMinor(n1)
	if newer {
		mustFail(t, "health_check pre of the new-release node", pre, "ZDH01",
			"spock-version: n4 has Spock", "its source n1 has Spock", "same Spock major.minor on both ends")
		mustFail(t, "add_node n4 of the new release", n4.AddNode(ctx, n1), "ZDC01", "spock-version: n4 has Spock")
		noTraces(t, "n4", c.Nodes...)
		t.Logf("refused as it should be:\n%s", pre.Messages())
	} else {
		mustSucceed(t, "health_check pre of the new-release node", pre)
		mustSucceed(t, "add_node n4 of the new release", n4.AddNode(ctx, n1))
	}

	// The old node leaves while the others keep writing.
	mustSucceed(t, "remove_node n3", n1.Call(ctx, `CALL spock.remove_node('n3')`))
	eventsAtRemove := value[int64](t, n1, `SELECT count(*) FROM events WHERE origin = 'n1'`)
	if err := spocktest.Poll(ctx, time.Minute, func() (bool, string, error) {
		n, err := spocktest.QueryValue[int64](ctx, n1, `SELECT count(*) FROM events WHERE origin = 'n1'`)
		return n >= eventsAtRemove+30, fmt.Sprintf("%d payer rounds since the removal", n-eventsAtRemove), err
	}); err != nil {
		t.Fatal(err)
	}
	res := stop()
	for _, e := range res.Errors {
		t.Errorf("a client saw an error: %v", e)
	}
	t.Logf("load: orders inserted %v, %d paid on n1, %d deleted on n2; events %v", res.Orders, res.Paid, res.Deleted, res.Events)
	if res.Paid == 0 || res.Deleted == 0 {
		t.Fatalf("the load did not exercise cross-node changes: %d paid, %d deleted", res.Paid, res.Deleted)
	}

	remaining := []*spocktest.Node{n1, n2}
	if !newer {
		remaining = append(remaining, n4)
	}
	if _, err := spocktest.Identical(ctx, remaining, convergeLimit); err != nil {
		t.Error(err)
	}
	exactlyTheCommittedRows(t, res, remaining)
	for _, n := range remaining {
		if got := value[int64](t, n, `SELECT count(*) FROM spock.node WHERE node_name = 'n3'`); got != 0 {
			t.Errorf("%s still knows n3", n.Name)
		}
	}
	if got := value[int64](t, n3, `SELECT count(*) FROM spock.node`); got != 0 {
		t.Errorf("n3 is still a Spock node after remove_node")
	}
}
