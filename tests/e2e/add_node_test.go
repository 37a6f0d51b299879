//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// Scenario 1: a lone database grows into a four-node cluster, one
// add_node at a time, each run on the new node; after every step each
// pair of nodes replicates both ways.
func TestGrowFromOneToFourNodes(t *testing.T) {
	ns := nodes(t, "n1", "n2", "n3", "n4")
	n1, n2, n3, n4 := ns[0], ns[1], ns[2], ns[3]
	// n1 is a plain Spock database with data, not yet a Spock node.
	exec(t, n1, pairsTable)
	exec(t, n1, `CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)`)
	exec(t, n1, `INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 5000) g`)

	mustSucceed(t, "add_node n2 from n1", n2.AddNode(testContext(t), n1))
	rowsEverywhere(t, "after n2", n1, n2)

	// From psql, in a session with European dates: the journal, which is
	// written through other sessions, must still record every phase.
	dmy := dbaCall(testContext(t), n3, fmt.Sprintf("SET DateStyle = 'SQL, DMY'; CALL spock.add_node('n1', '%s', 'n3', '%s')", n1.DSN(), n3.DSN()))
	mustSucceed(t, "add_node n3 from n1 with DateStyle SQL, DMY", dmy)
	if strings.Contains(dmy.Messages(), "could not update the operation journal") {
		t.Errorf("with DateStyle SQL, DMY the journal was not written:\n%s", dmy.Messages())
	}
	if got := value[string](t, n3, `SELECT state || ' ' || (phase_durations IS NOT NULL) FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`); got != "succeeded true" {
		t.Errorf("with DateStyle SQL, DMY the journal on n3 shows %q", got)
	}
	rowsEverywhere(t, "after n3", n1, n2, n3)

	// The source need not be the first node.
	call := n4.AddNode(testContext(t), n2)
	mustSucceed(t, "add_node n4 from n2", call)
	rowsEverywhere(t, "after n4", n1, n2, n3, n4)
	all := &spocktest.Cluster{Nodes: ns}

	for _, n := range ns {
		if got := value[int64](t, n, `SELECT count(*) FROM accounts`); got != 5000 {
			t.Errorf("%s has %d accounts, want 5000", n.Name, got)
		}
		if got := value[int64](t, n, `SELECT count(*) FROM spock.node`); got != 4 {
			t.Errorf("%s knows %d nodes, want 4", n.Name, got)
		}
		if got := value[int64](t, n, `SELECT count(*) FROM spock.subscription`); got != 3 {
			t.Errorf("%s has %d subscriptions, want 3", n.Name, got)
		}
		if bad, err := all.NotReplicating(testContext(t), n); err != nil || len(bad) > 0 {
			t.Errorf("%s has subscriptions that do not replicate: %v %v", n.Name, bad, err)
		}
	}

	// What a DBA sees: one line per phase with its duration, then the
	// cluster's nodes and every subscription's status.
	out := call.Messages()
	for phase := 1; phase <= 10; phase++ {
		if !strings.Contains(out, "phase "+strconv.Itoa(phase)+"/10 ") {
			t.Errorf("progress lacks phase %d/10:\n%s", phase, out)
		}
	}
	for _, want := range []string{"checks: done in", "copy: done in", "verify: done in",
		"subscriptions on n4: sub_n1_n4 replicating, sub_n2_n4 replicating, sub_n3_n4 replicating",
		"n4 joined the cluster in"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	history := value[string](t, n4, `SELECT state || ': ' || phase_durations FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`)
	if !strings.HasPrefix(history, "succeeded: checks ") || !strings.Contains(history, "verify ") {
		t.Errorf("zodan_operations on n4 shows %q", history)
	}
}

// Scenario 2: a node joins while every existing node takes writes; no row
// is lost or duplicated, the new node ends identical, no writer sees an
// error.
func TestAddNodeUnderWriteLoad(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n4 := nodes(t, "n4")[0]
	ctx := testContext(t)
	if err := spocktest.CreateLoadTable(ctx, c.Nodes); err != nil {
		t.Fatal(err)
	}
	// Some history to copy.
	exec(t, c.Get("n2"), `INSERT INTO load_rows (origin, seq) SELECT 'n2', g FROM generate_series(1, 20000) g`)

	load, err := spocktest.StartLoad(ctx, c.Nodes, "n1", 40)
	if err != nil {
		t.Fatal(err)
	}
	call := n4.AddNode(ctx, c.Get("n1"))
	// Keep writing a while after the join, through the new node too.
	load2, err := spocktest.StartLoad(ctx, []*spocktest.Node{n4}, "", 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := spocktest.Poll(ctx, time.Minute, func() (bool, string, error) {
		n, err := spocktest.QueryValue[int64](ctx, n4, `SELECT count(*) FROM load_rows WHERE origin = 'n4'`)
		return n >= 50, "n4 wrote fewer than 50 rows", err
	}); err != nil {
		t.Fatal(err)
	}
	res := load.Stop()
	res2 := load2.Stop()
	mustSucceed(t, "add_node n4 under write load", call)
	for _, e := range append(res.AllErrors(), res2.AllErrors()...) {
		t.Errorf("a client saw an error: %v", e)
	}
	committed := res.Committed
	committed["n4"] = res2.Committed["n4"]
	t.Logf("load: %d rows committed (%v), %d updates on n1, slowest statement %s",
		res.Total()+res2.Total(), committed, res.Updates, res.LongestStmt.Round(time.Millisecond))
	all := append(c.Nodes, n4)
	if err := spocktest.Converged(ctx, all, committed, convergeLimit); err != nil {
		t.Fatal(err)
	}
	if res.LongestStmt > 5*time.Second {
		t.Errorf("a writer stalled for %s during the join", res.LongestStmt)
	}
}
