//go:build e2e

package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// A join that fails or is stopped must end in a clean, known state: a
// clear error, nothing of the new node left anywhere (or a cleanup that
// the next attempt finishes), the rest of the cluster replicating, and no
// committed row lost. Each test runs a write load on the existing nodes
// throughout and ends by joining the node for real.

// faultCluster is a three-node cluster under write load with a table big
// enough that its copy can be held up, plus a fresh fourth node.
type faultCluster struct {
	c    *spocktest.Cluster
	n4   *spocktest.Node
	load *spocktest.Load
	// restarted is the node the test restarts: its own clients lose
	// their connections, which is not zodan's doing.
	restarted string
}

func newFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	return newFaultClusterWith(t, spocktest.NodeOptions{})
}

// newFaultClusterWith is newFaultCluster with options for n1, n2 and n3.
func newFaultClusterWith(t *testing.T, opts spocktest.NodeOptions) *faultCluster {
	t.Helper()
	c := meshWith(t, opts, "n1", "n2", "n3")
	n4 := nodes(t, "n4")[0]
	ctx := testContext(t)
	if err := spocktest.CreateLoadTable(ctx, c.Nodes); err != nil {
		t.Fatal(err)
	}
	exec(t, c.Get("n1"), `CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)`)
	exec(t, c.Get("n1"), pairsTable)
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "big", time.Minute); err != nil {
		t.Fatal(err)
	}
	exec(t, c.Get("n1"), `INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g`)
	load, err := spocktest.StartLoad(ctx, c.Nodes, "n1", 25)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultCluster{c: c, n4: n4, load: load}
	t.Cleanup(func() { f.stopLoad() })
	return f
}

func (f *faultCluster) stopLoad() spocktest.LoadResult {
	if f.load == nil {
		return spocktest.LoadResult{}
	}
	r := f.load.Stop()
	f.load = nil
	return r
}

// stallCopy holds up the initial copy into the new node n: a lock on
// pg_class there makes the schema restore wait (every CREATE inserts into
// pg_class) until release is called. It takes no transaction id, so
// nothing else (slot creation in particular) waits for it.
func stallCopy(t *testing.T, n *spocktest.Node) (release func()) {
	t.Helper()
	ctx := testContext(t)
	conn, err := n.Connect(ctx, spocktest.Database)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE pg_catalog.pg_class IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			tx.Rollback(context.Background())
			conn.Close(context.Background())
		}
	}
	t.Cleanup(release)
	return release
}

// waitCopyBlocked waits until the initial copy into n is held up by
// stallCopy: pg_restore waits for the lock.
func waitCopyBlocked(t *testing.T, n *spocktest.Node) {
	t.Helper()
	ctx := testContext(t)
	err := spocktest.Poll(ctx, 2*time.Minute, func() (bool, string, error) {
		c, err := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM pg_stat_activity
		    WHERE application_name = 'pg_restore' AND wait_event_type = 'Lock'`)
		return c > 0, "no pg_restore waiting on " + n.Name, err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitRollingBack waits until the journal on n says the join is being
// rolled back.
func waitRollingBack(t *testing.T, n *spocktest.Node) {
	t.Helper()
	ctx := testContext(t)
	err := spocktest.Poll(ctx, 2*time.Minute, func() (bool, string, error) {
		msg, err := spocktest.QueryValue[string](ctx, n, `SELECT coalesce((SELECT last_message FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1), '')`)
		return strings.HasSuffix(msg, "rolling back"), "last message: " + msg, err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitForPhase watches the journal on n, the new node, closely (a phase
// may last a fraction of a second) until the running operation is in
// phase. It fails the test if the operation ends first.
func waitForPhase(t *testing.T, n *spocktest.Node, phase string) {
	t.Helper()
	ctx := testContext(t)
	journal, err := n.Connect(ctx, spocktest.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close(context.Background())
	for {
		var state, current string
		err := journal.QueryRow(ctx, `SELECT coalesce((SELECT state FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1), ''),
		                                     coalesce((SELECT current_phase FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1), '')`).Scan(&state, &current)
		if err != nil {
			t.Fatal(err)
		}
		if state == "running" && current == phase {
			return
		}
		if state != "" && state != "running" {
			t.Fatalf("the operation ended (%s in %s) before phase %s was seen", state, current, phase)
		}
	}
}

// killDuringCopy starts add_node on n (source src) and kills n (as a
// crash would) while its initial copy runs.
func killDuringCopy(t *testing.T, n, src *spocktest.Node) {
	t.Helper()
	release := stallCopy(t, n)
	done := startAddNode(testContext(t), n, src)
	waitCopyBlocked(t, n)
	if err := n.Cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	release()
	call := <-done
	if call.Err == nil {
		t.Fatal("add_node succeeded although its node was killed")
	}
	t.Logf("add_node ended with: %v", call.Err)
}

// startAddNode runs add_node on n in the background.
func startAddNode(ctx context.Context, n, src *spocktest.Node, extra ...string) <-chan spocktest.Call {
	done := make(chan spocktest.Call, 1)
	go func() { done <- n.AddNode(ctx, src, extra...) }()
	return done
}

// wellAfter checks the end state every fault test must reach: the
// existing nodes replicate, nothing of n4 is anywhere, n4 is a plain
// database again; then n4 joins for real and every committed row is on
// every node.
func (f *faultCluster) wellAfter(t *testing.T) {
	t.Helper()
	c, n4 := f.c, f.n4
	ctx := testContext(t)
	if err := c.WaitReplicating(ctx, convergeLimit); err != nil {
		t.Fatalf("the cluster does not replicate after the fault: %v", err)
	}
	rowsEverywhere(t, "after the fault", c.Nodes...)
	noTraces(t, "n4", c.Nodes...)
	mustSucceed(t, "add_node n4 again", n4.AddNode(ctx, c.Get("n1")))
	f.converged(t)
}

// converged checks that the four nodes replicate both ways and that
// every row the load committed is on every node.
func (f *faultCluster) converged(t *testing.T) {
	t.Helper()
	c, n4 := f.c, f.n4
	ctx := testContext(t)
	rowsEverywhere(t, "after the join", append(c.Nodes, n4)...)
	res := f.stopLoad()
	for origin, errs := range res.Errors {
		if origin == f.restarted {
			t.Logf("%d errors on %s, which the test restarted (first: %v)", len(errs), origin, errs[0])
			continue
		}
		for _, e := range errs {
			t.Errorf("a client saw an error: %v", e)
		}
	}
	if err := spocktest.Converged(ctx, append(c.Nodes, n4), res.Committed, convergeLimit); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rows written during the test reached every node", res.Total())
}

// The new node dies during the initial copy: the CALL fails (its session
// is gone), and the next add_node finds the interrupted operation in the
// journal and cleans up after it before joining.
func TestFaultNewNodeKilledDuringCopy(t *testing.T) {
	f := newFaultCluster(t)
	n1, n4 := f.c.Get("n1"), f.n4
	killDuringCopy(t, n4, n1)
	if err := n4.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	state := value[string](t, n4, `SELECT state || ' in ' || coalesce(current_phase, '?') FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`)
	if state != "interrupted in copy" {
		t.Errorf("the journal shows the killed add_node as %q, want interrupted in copy", state)
	}
	// Before the retry cleans up, the half-added node is visible.
	if value[int64](t, n4, `SELECT count(*) FROM spock.subscription`) == 0 {
		t.Error("the killed join left nothing behind on n4; the test did not kill it mid-way")
	}
	retry := n4.AddNode(testContext(t), n1)
	mustSucceed(t, "add_node n4 after the crash", retry)
	if !strings.Contains(retry.Messages(), "cleaning up after add_node of n4") {
		t.Errorf("the retry did not say it cleaned up:\n%s", retry.Messages())
	}
	f.converged(t)

	// A join that worked but whose end never reached the journal (its
	// session died right after the last phase) looks interrupted. The next
	// add_node must not undo it: n4 is a working node.
	exec(t, n4, `UPDATE spock.zodan_operation SET state = 'running', finished_at = NULL
	              WHERE op_id = (SELECT max(op_id) FROM spock.zodan_operation)`)
	again := n4.AddNode(testContext(t), n1)
	mustFail(t, "add_node of a node that is already a working member", again, "ZDC05",
		"this database is node n4, a working member of the cluster", "never detaches a working node")
	rowsEverywhere(t, "after the refused retry", append(f.c.Nodes, n4)...)
}

// The source restarts during the join: the copy breaks, add_node fails
// saying so, and rolls back (reconnecting to the restarted source).
func TestFaultSourceRestartsDuringJoin(t *testing.T) {
	f := newFaultCluster(t)
	n1, n4 := f.c.Get("n1"), f.n4
	release := stallCopy(t, n4)
	done := startAddNode(testContext(t), n4, n1, "verb => true")
	waitCopyBlocked(t, n4)
	f.restarted = "n1"
	if err := n1.Cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	release()
	call := <-done
	if call.Err == nil {
		// The copy may have finished before the restart; then the join
		// must simply have worked.
		t.Log("the copy finished before the restart")
		mustSucceed(t, "add_node", call)
		f.converged(t)
		return
	}
	{
		pg := mustFail(t, "add_node while the source restarts", call, "", "add_node n4 failed in phase")
		if !strings.Contains(pg.Detail, "Everything add_node had created was removed") {
			t.Errorf("the rollback was not complete:\n%s\nprogress:\n%s", pg.Detail, call.Messages())
		}
		if got := value[string](t, n4, `SELECT state FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`); got != "failed" {
			t.Errorf("journal state %q, want failed", got)
		}
	}
	f.wellAfter(t)
}

// A node of the cluster is down before the join: add_node refuses at
// once, names it, creates nothing; once it is back the join works.
func TestFaultNodeUnreachableBeforeJoin(t *testing.T) {
	f := newFaultCluster(t)
	n1, n3, n4 := f.c.Get("n1"), f.c.Get("n3"), f.n4
	f.stopLoad()
	if err := n3.Cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	call := n4.AddNode(testContext(t), n1)
	pg := mustFail(t, "add_node with n3 down", call, "ZDC01", "phase 1/10 checks", "cannot reach node n3")
	if !strings.Contains(pg.Detail, "Nothing had been created") {
		t.Errorf("DETAIL = %q", pg.Detail)
	}
	if value[int64](t, n4, `SELECT count(*) FROM spock.node`) != 0 {
		t.Error("n4 became a node although the join was refused")
	}
	if err := n3.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	load, err := spocktest.StartLoad(testContext(t), f.c.Nodes, "n1", 25)
	if err != nil {
		t.Fatal(err)
	}
	f.load = load
	f.wellAfter(t)
}

// A wait that makes no progress within sync_timeout fails with what it
// waited for and the last state seen, and the join is rolled back.
func TestFaultTimeoutExpires(t *testing.T) {
	f := newFaultCluster(t)
	n1, n4 := f.c.Get("n1"), f.n4
	release := stallCopy(t, n4)
	done := startAddNode(testContext(t), n4, n1, `sync_timeout => '4 seconds'`)
	waitRollingBack(t, n4)
	release()
	call := <-done
	pg := mustFail(t, "add_node with a stalled copy", call, "ZDT01",
		"phase 4/10 copy", "timed out waiting for the initial copy from n1 to n4: no progress for 4 s", "copying the schema")
	if !strings.Contains(pg.Detail, "Everything add_node had created was removed") {
		t.Errorf("DETAIL = %q", pg.Detail)
	}
	if n := value[int64](t, n4, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`); n != 0 {
		t.Errorf("n4 still has %d tables from the aborted copy", n)
	}
	f.wellAfter(t)
}

// Cancelling the CALL (what Ctrl-C in psql or zodan does) stops it on the
// server and rolls the join back.
func TestFaultCancelled(t *testing.T) {
	f := newFaultCluster(t)
	n1, n4 := f.c.Get("n1"), f.n4
	release := stallCopy(t, n4)
	ctx, cancel := context.WithCancel(testContext(t))
	done := startAddNode(ctx, n4, n1)
	waitCopyBlocked(t, n4)
	running := value[string](t, n4, `SELECT kind || ' ' || node || ' ' || state || ' ' || current_phase FROM spock.zodan_operations WHERE state = 'running'`)
	if running != "add_node n4 running copy" {
		t.Errorf("zodan_operations shows %q while the copy runs", running)
	}
	cancel()
	// The rollback needs the lock (it drops what the copy restored).
	release()
	call := <-done
	pg := mustFail(t, "cancelled add_node", call, "57014", "canceling statement due to user request")
	if !strings.Contains(pg.Detail, "Everything add_node had created was removed") {
		t.Errorf("DETAIL = %q", pg.Detail)
	}
	if got := value[string](t, n4, `SELECT state FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`); got != "cancelled" {
		t.Errorf("journal state %q, want cancelled", got)
	}
	f.wellAfter(t)
}

// A join into a lone database dies mid-copy: add_node had made the
// source a Spock node, and the retry undoes that before starting over.
func TestFaultLoneSourceJoinKilled(t *testing.T) {
	ns := nodes(t, "n1", "n2")
	n1, n2 := ns[0], ns[1]
	exec(t, n1, pairsTable)
	exec(t, n1, `CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL)`)
	exec(t, n1, `INSERT INTO accounts SELECT g, g FROM generate_series(1, 1000) g`)
	killDuringCopy(t, n2, n1)
	if err := n2.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	retry := n2.AddNode(testContext(t), n1)
	mustSucceed(t, "add_node n2 after the crash", retry)
	if !strings.Contains(retry.Messages(), "registered n1 as a Spock node") {
		t.Errorf("the retry did not register n1 again:\n%s", retry.Messages())
	}
	rowsEverywhere(t, "after the retry", n1, n2)
	if got := value[int64](t, n2, `SELECT count(*) FROM accounts`); got != 1000 {
		t.Errorf("n2 has %d accounts, want 1000", got)
	}
}

// A server of the cluster crashes during the join (one of its processes
// dies by a signal, as Spock's apply workers sometimes do, and the
// postmaster ends every session there and recovers): add_node fails
// naming that node, rolls back everything it created, reconnecting to the
// node once it has recovered, and does so promptly; the join then works.
func TestFaultSourceCrashesWhileSubscribing(t *testing.T) {
	// Test servers commit asynchronously, for speed; a commit whose WAL
	// was still in shared memory is lost in a crash, and the load's
	// client would miss a row it saw committed. Durable commits, as in
	// production, make every committed row a row the cluster must keep.
	f := newFaultClusterWith(t, spocktest.NodeOptions{Settings: map[string]string{"synchronous_commit": "on"}})
	n1, n4 := f.c.Get("n1"), f.n4
	ctx := testContext(t)
	victim, err := n1.Connect(ctx, spocktest.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(context.Background())
	var pid int
	if err := victim.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	done := startAddNode(ctx, n4, n1)
	// Phase 8 creates the subscriptions to n4 on n1, n2 and n3 and waits
	// for them to replicate: a second or two, watched closely.
	waitForPhase(t, n4, "subscribe")
	// SIGKILL, like a segfault, makes the postmaster end every session and
	// recover: the crash restart a DBA sees.
	f.restarted = "n1"
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing n1's backend %d: %v", pid, err)
	}
	start := time.Now()
	call := <-done
	took := time.Since(start)
	t.Logf("add_node ended %s after n1 crashed", took.Round(time.Millisecond))
	if took > 2*time.Minute {
		t.Errorf("add_node took %s to end after n1 crashed", took.Round(time.Second))
	}
	if call.Err == nil {
		// The phase ended before the crash reached it.
		t.Log("the join finished despite the crash")
		f.converged(t)
		return
	}
	pg := mustFail(t, "add_node while n1 crashes", call, "", "add_node n4 failed in phase")
	if !strings.Contains(pg.Detail, "Everything add_node had created was removed") {
		t.Errorf("the rollback was not complete:\n%s\nprogress:\n%s", pg.Detail, call.Messages())
	}
	t.Logf("add_node failed: %s\n%s", pg.Message, call.Messages())
	f.wellAfter(t)
}

// A node of the cluster goes down during the join and stays down through
// the rollback: add_node fails at once, rolls back everywhere else, and
// its DETAIL names the node and gives the statements to run there. Once
// the node is back, add_node again finishes that cleanup first and joins.
func TestFaultPeerDownThroughRollback(t *testing.T) {
	// n2 goes down as in a crash (immediate shutdown): durable commits, so
	// that every row its clients saw committed must survive (see
	// TestFaultSourceCrashesWhileSubscribing).
	f := newFaultClusterWith(t, spocktest.NodeOptions{Settings: map[string]string{"synchronous_commit": "on"}})
	n1, n2, n4 := f.c.Get("n1"), f.c.Get("n2"), f.n4
	ctx := testContext(t)
	done := startAddNode(ctx, n4, n1)
	waitForPhase(t, n4, "subscribe")
	f.restarted = "n2"
	if err := n2.Cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	call := <-done
	pg := mustFail(t, "add_node while n2 is down", call, "", "add_node n4 failed in phase")
	t.Logf("add_node failed: %s\nDETAIL: %s", pg.Message, pg.Detail)
	for _, want := range []string{"Rolled back on every reachable node, but not on: n2",
		"CALL add_node again (it finishes the cleanup first)", "on node n2: SELECT spock.sub_drop("} {
		if !strings.Contains(pg.Detail, want) {
			t.Errorf("DETAIL does not say %q:\n%s", want, pg.Detail)
		}
	}
	if got := value[string](t, n4, `SELECT state || ': ' || coalesce(cleanup, '') FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`); !strings.HasPrefix(got, "failed: Rolled back on every reachable node, but not on: n2") {
		t.Errorf("the journal on n4 says %q", got)
	}
	if err := n2.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	// add_node starts only in a cluster that replicates (its checks say
	// which subscription is down); n2's peers reconnect within seconds.
	// What the rollback left on n2 (a subscription from n4) is not the
	// cluster's.
	fromN4 := func(sub string) bool { return strings.HasPrefix(sub, "sub_n4_") }
	if err := f.c.WaitReplicatingExcept(ctx, convergeLimit, fromN4); err != nil {
		t.Fatalf("the cluster does not replicate once n2 is back: %v", err)
	}
	retry := n4.AddNode(ctx, n1)
	mustSucceed(t, "add_node n4 once n2 is back", retry)
	if !strings.Contains(retry.Messages(), "cleaning up after add_node of n4") {
		t.Errorf("the retry did not say it cleaned up:\n%s", retry.Messages())
	}
	f.converged(t)
}
