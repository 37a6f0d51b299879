//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// A cluster that runs zodan 1.0.0, with a join in its journal, upgrades to
// 1.1.0 with zodan-install and later rolls back to 1.0.0. Each direction
// installs exactly that release's procedures on every node, keeps every
// node's operation journal, and leaves procedures that work: a join with
// 1.0.0, a removal with 1.1.0, a join again after the downgrade.
func TestReleaseUpgradeAndDowngradeOnCluster(t *testing.T) {
	c := mesh(t, "n1", "n2")
	n1, n2 := c.Get("n1"), c.Get("n2")
	n3 := nodes(t, "n3")[0]
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(testContext(t), c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}

	expect := func(what string, r cliRun, lines int, want string) {
		t.Helper()
		if r.code != 0 || strings.Count(r.stdout, want) != lines {
			t.Fatalf("%s: want %d lines saying %q:\n%s", what, lines, want, r)
		}
		t.Logf("zodan-install %s:\n%s", what, r.stdout)
	}
	// Every node back to 1.0.0, as a cluster installed with zodan 1.0.0.
	expect("downgrade --to 1.0.0 --cluster", zodanInstall(t, "downgrade", "--to", "1.0.0", "--dsn", n1.DSN(), "--cluster"),
		2, "downgraded version 3 (zodan 1.1.0) -> 2 (zodan 1.0.0)")
	expect("downgrade --to 1.0.0 (n3)", zodanInstall(t, "downgrade", "--to", "1.0.0", "--dsn", n3.DSN()),
		1, "downgraded version 3 (zodan 1.1.0) -> 2 (zodan 1.0.0)")
	mustSucceed(t, "add_node n3 with zodan 1.0.0", n3.AddNode(testContext(t), n1))
	rowsEverywhere(t, "joined with 1.0.0", n1, n2, n3)

	// Upgrade the whole cluster, journal and all.
	expect("install --cluster (upgrade)", zodanInstall(t, "install", "--dsn", n1.DSN(), "--cluster"),
		3, "installed version 2 (zodan 1.0.0) -> 3 (zodan 1.1.0)")
	expect("status --cluster after the upgrade", zodanInstall(t, "status", "--dsn", n1.DSN(), "--cluster"),
		3, "version 3 (zodan 1.1.0), procedures exactly as released in zodan 1.1.0")
	if got := value[string](t, n3, `SELECT string_agg(kind || ' ' || node || ' ' || state || ': ' || phase_durations, '; ')
	                                  FROM spock.zodan_operations`); !strings.HasPrefix(got, "add_node n3 succeeded: checks ") {
		t.Errorf("n3's journal after the upgrade: %q, want 1.0.0's add_node of n3", got)
	}
	mustSucceed(t, "remove_node n3 with zodan 1.1.0", n1.Call(testContext(t), `CALL spock.remove_node('n3')`))
	rowsEverywhere(t, "n3 removed", n1, n2)

	// And back: exactly 1.0.0 again, the journals as they were.
	expect("downgrade --to 1.0.0 --cluster", zodanInstall(t, "downgrade", "--to", "1.0.0", "--dsn", n1.DSN(), "--cluster"),
		2, "downgraded version 3 (zodan 1.1.0) -> 2 (zodan 1.0.0)")
	expect("downgrade --to 2 (n3)", zodanInstall(t, "downgrade", "--to", "2", "--dsn", n3.DSN()),
		1, "downgraded version 3 (zodan 1.1.0) -> 2 (zodan 1.0.0)")
	for _, n := range c.Nodes {
		expect("status on "+n.Name, zodanInstall(t, "status", "--dsn", n.DSN()),
			1, "version 2 (zodan 1.0.0), procedures exactly as released in zodan 1.0.0")
	}
	if got := value[string](t, n1, `SELECT string_agg(kind || ' ' || node || ' ' || state, '; ') FROM spock.zodan_operations`); got != "remove_node n3 succeeded" {
		t.Errorf("n1's journal after the downgrade: %q, want the removal of n3", got)
	}
	if got := value[int64](t, n3, `SELECT count(*) FROM spock.zodan_operations WHERE kind = 'add_node' AND state = 'succeeded'`); got != 1 {
		t.Errorf("n3's journal lost its join: %d succeeded add_node", got)
	}
	// A removed node keeps its data; to join again it starts empty.
	exec(t, n3, "DROP TABLE pairs")
	mustSucceed(t, "add_node n3 again with zodan 1.0.0", n3.AddNode(testContext(t), n1))
	rowsEverywhere(t, "joined again with 1.0.0", n1, n2, n3)
}
