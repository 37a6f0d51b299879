//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// Scenario 3: tables that live only in a user-created replication set,
// and sequences, reach the new node; it ends with exactly the source's
// replication sets; a schema it already had is kept, not clobbered.
func TestReplicationSetsSequencesAndOwnSchemas(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")
	n4 := nodes(t, "n4")[0]
	ctx := testContext(t)

	exec(t, n1, `CREATE TABLE only_extra (id int PRIMARY KEY, note text NOT NULL)`)
	exec(t, n1, `CREATE SEQUENCE order_seq`)
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "only_extra", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := spocktest.WaitForRelation(ctx, c.Nodes, "order_seq", time.Minute); err != nil {
		t.Fatal(err)
	}
	// Replication sets are each node's own: set up "extra" everywhere and
	// move only_extra into it, as a DBA would.
	for _, n := range c.Nodes {
		exec(t, n, `SELECT spock.repset_create('extra', true, true, true, true)`)
		exec(t, n, `SELECT spock.repset_remove_table('default', 'only_extra')`)
		exec(t, n, `SELECT spock.repset_add_table('extra', 'only_extra')`)
		exec(t, n, `SELECT spock.repset_add_seq('default', 'order_seq')`)
		exec(t, n, `SELECT spock.sub_add_repset(sub_name, 'extra') FROM spock.subscription`)
	}
	// Adding a set to a subscription restarts its worker.
	if err := c.WaitReplicating(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	exec(t, n1, `SELECT setval('order_seq', 1000)`)
	exec(t, n1, `INSERT INTO only_extra SELECT g, 'from n1' FROM generate_series(1, 100) g`)
	exec(t, n2, `INSERT INTO only_extra SELECT g, 'from n2' FROM generate_series(101, 150) g`)
	waitCount(t, "only_extra", 150, n1, n2, n3)

	// pgEdge ACE keeps node-local state in schema pgedge_ace, which
	// Spock's copy always leaves out. Spock 5.0's AutoDDL puts a table
	// created there into the default set (6.0 keeps it out): either way
	// the join must not require it on n4.
	exec(t, n1, `CREATE SCHEMA pgedge_ace`)
	exec(t, n1, `CREATE TABLE pgedge_ace.ace_meta (k text PRIMARY KEY, v text)`)
	aceInSets := value[int64](t, n1, `SELECT count(*) FROM spock.tables WHERE nspname = 'pgedge_ace' AND set_name IS NOT NULL`)
	t.Logf("pgedge_ace.ace_meta is in %d replication sets on n1", aceInSets)

	// n4 has a schema of its own.
	exec(t, n4, `CREATE SCHEMA n4_local`)
	exec(t, n4, `CREATE FUNCTION n4_local.hello() RETURNS text LANGUAGE sql AS $$ SELECT 'kept' $$`)

	call := n4.AddNode(ctx, n1)
	mustSucceed(t, "add_node n4", call)
	if !strings.Contains(call.Messages(), "keeping n4's own schemas n4_local") {
		t.Errorf("add_node did not say it keeps n4_local:\n%s", call.Messages())
	}

	if strings.Contains(call.Messages(), "changed during the join") {
		t.Errorf("add_node warns about replication sets that did not change:\n%s", call.Messages())
	}
	if got := value[int64](t, n4, `SELECT count(*) FROM spock.tables WHERE nspname = 'pgedge_ace' AND set_name IS NOT NULL`); got != 0 {
		t.Errorf("n4 has pgedge_ace tables in %d replication sets", got)
	}
	if got := value[int64](t, n4, `SELECT count(*) FROM only_extra`); got != 150 {
		t.Errorf("n4 has %d rows of only_extra, want 150", got)
	}
	exec(t, n3, `INSERT INTO only_extra VALUES (151, 'from n3 after the join')`)
	exec(t, n4, `INSERT INTO only_extra VALUES (152, 'from n4')`)
	waitCount(t, "only_extra", 152, n1, n2, n3, n4)

	// Everything but ACE's node-local table.
	want := strings.ReplaceAll(repsetEntries(t, n1), "; table pgedge_ace.ace_meta in default", "")
	if got := repsetEntries(t, n4); got != want {
		t.Errorf("n4's replication sets differ from n1's:\n n1: %s\n n4: %s", want, got)
	}
	if !strings.Contains(want, "table only_extra in extra") || !strings.Contains(want, "sequence order_seq in default") {
		t.Errorf("n1's replication sets lack the test's entries: %s", want)
	}
	if got := value[int64](t, n4, `SELECT last_value FROM order_seq`); got < 1000 {
		t.Errorf("order_seq on n4 is at %d, n1 had it at 1000", got)
	}
	if got := value[string](t, n4, `SELECT n4_local.hello()`); got != "kept" {
		t.Errorf("n4_local.hello() = %q", got)
	}
	if value[bool](t, n1, `SELECT to_regnamespace('n4_local') IS NOT NULL`) {
		t.Error("n4's own schema leaked to n1")
	}
}

// repsetEntries lists a node's replication sets, tables and sequences in
// the form zodan compares them.
func repsetEntries(t *testing.T, n *spocktest.Node) string {
	t.Helper()
	return value[string](t, n, `
		SELECT string_agg(e, '; ' ORDER BY e)
		  FROM spock.zodan_repset_entries((
		       SELECT jsonb_build_object(
		           'sets', (SELECT jsonb_agg(jsonb_build_object('name', set_name, 'insert', replicate_insert,
		                        'update', replicate_update, 'delete', replicate_delete, 'truncate', replicate_truncate))
		                      FROM spock.replication_set rs JOIN spock.local_node l ON l.node_id = rs.set_nodeid),
		           'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object('set', rs.set_name, 'relation', st.set_reloid::regclass::text)), '[]')
		                        FROM spock.replication_set_table st JOIN spock.replication_set rs USING (set_id)
		                        JOIN spock.local_node l ON l.node_id = rs.set_nodeid),
		           'sequences', (SELECT coalesce(jsonb_agg(jsonb_build_object('set', rs.set_name, 'relation', sq.set_seqoid::regclass::text)), '[]')
		                           FROM spock.replication_set_seq sq JOIN spock.replication_set rs USING (set_id)
		                           JOIN spock.local_node l ON l.node_id = rs.set_nodeid)))) e`)
}

func waitCount(t *testing.T, table string, want int64, ns ...*spocktest.Node) {
	t.Helper()
	ctx := testContext(t)
	err := spocktest.Poll(ctx, convergeLimit, func() (bool, string, error) {
		var behind []string
		for _, n := range ns {
			got, err := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM `+table)
			if err != nil {
				return false, "", err
			}
			if got != want {
				behind = append(behind, n.Name+" has "+strconv.FormatInt(got, 10))
			}
		}
		return len(behind) == 0, strings.Join(behind, ", "), nil
	})
	if err != nil {
		t.Fatalf("%s did not reach %d rows everywhere: %v", table, want, err)
	}
}

// Scenario 5: removing a healthy node, run on that node, leaves nothing
// of it anywhere, and the others keep replicating.
func TestRemoveHealthyNodeFromItself(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(testContext(t), c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}
	rowsEverywhere(t, "before", n1, n2, n3)
	// Upstream-compatible positional call, run on the node itself.
	call := n3.Call(testContext(t), `CALL spock.remove_node('n3', $1)`, n3.DSN())
	mustSucceed(t, "remove_node n3 on n3", call)
	noTraces(t, "n3", n1, n2, n3)
	if got := value[int64](t, n3, `SELECT count(*) FROM spock.node`); got != 0 {
		t.Errorf("n3 still has %d Spock nodes", got)
	}
	if got := value[int64](t, n3, `SELECT count(*) FROM pairs`); got != 3 {
		t.Errorf("n3 lost its data: %d rows in pairs", got)
	}
	rowsEverywhere(t, "after", n1, n2)
	if got := value[int64](t, n1, `SELECT count(*) FROM pairs WHERE tag = 'after'`); got != 2 {
		t.Errorf("n1 has %d 'after' rows", got)
	}
	if value[int64](t, n3, `SELECT count(*) FROM pairs WHERE tag = 'after'`) != 0 {
		t.Error("n3 still receives changes after its removal")
	}
}
