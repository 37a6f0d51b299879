//go:build e2e

package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// remove_node works from any surviving node: for a healthy node, for one
// that is down (and, once it is back, on itself), and the others keep
// replicating.
func TestRemoveNodeFromAnywhere(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3", "n4")
	n1, n2, n3, n4 := c.Get("n1"), c.Get("n2"), c.Get("n3"), c.Get("n4")
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(testContext(t), c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}
	rowsEverywhere(t, "start", c.Nodes...)

	// A healthy node, removed from another node.
	mustSucceed(t, "remove_node n4 on n1", n1.Call(testContext(t), `CALL spock.remove_node('n4')`))
	noTraces(t, "n4", n1, n2, n3, n4)
	rowsEverywhere(t, "without n4", n1, n2, n3)

	// A node that is down.
	if err := n3.Cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	call := n2.Call(testContext(t), `CALL spock.remove_node(target_node_name => 'n3', sync_timeout => '10 s')`)
	mustSucceed(t, "remove_node n3 (down) on n2", call)
	out := call.Messages()
	for _, want := range []string{"n3 is unreachable", "Once they are back, run there", "on node n3: "} {
		if !strings.Contains(out, want) {
			t.Errorf("removal of a down node does not say %q:\n%s", want, out)
		}
	}
	noTraces(t, "n3", n1, n2)
	rowsEverywhere(t, "without n3", n1, n2)

	// It comes back: removing it on itself finishes the job there.
	if err := n3.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, "remove_node n3 on n3", n3.Call(testContext(t), `CALL spock.remove_node('n3', $1)`, n3.DSN()))
	noTraces(t, "n3", n1, n2, n3)
	if got := value[int64](t, n3, `SELECT count(*) FROM spock.node`); got != 0 {
		t.Errorf("n3 still has %d node rows", got)
	}
	rowsEverywhere(t, "end", n1, n2)
}

// A node that was half added (its add_node died mid-way and nobody
// retried) is removed from another node, which leaves the cluster as if
// it had never started to join.
func TestRemoveHalfAddedNode(t *testing.T) {
	f := newFaultCluster(t)
	n1, n4 := f.c.Get("n1"), f.n4
	killDuringCopy(t, n4, n1)
	// n4 stays down; n1 knows nothing of it yet, n2 and n3 have its slots.
	call := n1.Call(testContext(t), `CALL spock.remove_node(target_node_name => 'n4', target_node_dsn => $1, sync_timeout => '10 s')`, n4.DSN())
	mustSucceed(t, "remove_node of the half-added n4 on n1", call)
	noTraces(t, "n4", f.c.Nodes...)
	if err := n4.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	// The next add_node of n4 cleans n4 itself up and joins.
	f.stopLoad()
	load, err := spocktest.StartLoad(testContext(t), f.c.Nodes, "n1", 25)
	if err != nil {
		t.Fatal(err)
	}
	f.load = load
	mustSucceed(t, "add_node n4 after removing its remains", n4.AddNode(testContext(t), n1))
	f.converged(t)
}

// Only one add_node/remove_node runs per cluster at a time: a second one
// is refused at once, naming the running operation, its node and its
// start time; the running one is visible in zodan_operations.
func TestOneOperationAtATime(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2 := c.Get("n1"), c.Get("n2")
	fresh := nodes(t, "n4", "n5")
	n4, n5 := fresh[0], fresh[1]
	// Something to copy, so that the copy can be held up.
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(testContext(t), c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}
	release := stallCopy(t, n4)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	done := startAddNode(ctx, n4, n1)
	waitCopyBlocked(t, n4)

	started := value[time.Time](t, n4, `SELECT started_at FROM spock.zodan_operations WHERE state = 'running'`)
	progress := value[string](t, n4, `SELECT format('%s %s from %s: %s, %s', kind, node, source_node, current_phase, last_message)
	                                     FROM spock.zodan_operations WHERE state = 'running'`)
	if progress != "add_node n4 from n1: copy, initial copy from n1: copying the schema" {
		t.Errorf("zodan_operations shows %q", progress)
	}
	if value[bool](t, n4, `SELECT elapsed > interval '0' FROM spock.zodan_operations WHERE state = 'running'`) != true {
		t.Error("zodan_operations shows no elapsed time")
	}

	begin := time.Now()
	second := n5.AddNode(testContext(t), n2)
	refusedIn := time.Since(begin)
	pg := mustFail(t, "a second add_node", second, "55P03", "another zodan operation is running: add_node n4 (op 1 on n4), holding node n2 since ")
	// The lock holder's session started when add_node reached that node,
	// within moments of the operation itself.
	m := regexp.MustCompile(`since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC`).FindStringSubmatch(pg.Message)
	if m == nil {
		t.Fatalf("the refusal gives no start time: %s", pg.Message)
	}
	since, err := time.Parse("2006-01-02 15:04:05", m[1])
	if err != nil {
		t.Fatal(err)
	}
	if d := since.Sub(started.UTC().Truncate(time.Second)); d < 0 || d > 10*time.Second {
		t.Errorf("the refusal says the operation holds n2 since %s, but it started at %s", m[1], started.UTC())
	}
	if refusedIn > 10*time.Second {
		t.Errorf("the second add_node took %s to be refused", refusedIn)
	}
	if !strings.Contains(pg.Detail, "Nothing had been created") {
		t.Errorf("DETAIL = %q", pg.Detail)
	}
	mustFail(t, "a remove_node", n2.Call(testContext(t), `CALL spock.remove_node('n3')`), "55P03",
		"another zodan operation is running: add_node n4")
	if value[int64](t, n5, `SELECT count(*) FROM spock.node`) != 0 {
		t.Error("the refused add_node created a node on n5")
	}

	release()
	mustSucceed(t, "the first add_node", <-done)
	// And afterwards the next operation may run.
	mustSucceed(t, "add_node n5", n5.AddNode(testContext(t), n2))
	history := value[string](t, n4, `SELECT string_agg(state, ',' ORDER BY op_id) FROM spock.zodan_operations`)
	if history != "succeeded" {
		t.Errorf("n4's history: %q", history)
	}
	durations := value[string](t, n4, `SELECT phase_durations FROM spock.zodan_operations`)
	if !regexp.MustCompile(`^checks \d+\.\d\d s, register .*, verify \d+\.\d\d s, compare \d+\.\d\d s$`).MatchString(durations) {
		t.Errorf("phase_durations = %q", durations)
	}
}
