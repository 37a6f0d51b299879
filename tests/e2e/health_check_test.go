//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// Scenario 4: health_check('pre') fails, saying why, for each thing that
// would break a join, passes on a healthy setup; 'post' checks the new
// node replicates both ways; any other check_type is an error.
func TestHealthCheck(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")
	fresh := nodes(t, "n4", "n5")
	n4, n5 := fresh[0], fresh[1]

	check := func(on *spocktest.Node, src *spocktest.Node, newName, newDSN, kind string) spocktest.Call {
		return on.Call(testContext(t),
			`CALL spock.health_check(src_node_name => $1, src_dsn => $2, new_node_name => $3, new_node_dsn => $4, check_type => $5)`,
			src.Name, src.DSN(), newName, newDSN, kind)
	}
	pre := func() spocktest.Call { return check(n4, n1, "n4", n4.DSN(), "pre") }

	t.Run("healthy", func(t *testing.T) {
		call := pre()
		mustSucceed(t, "pre-check", call)
		for _, want := range []string{"PASS connect: all 4 nodes reachable", "PASS spock-version", "PASS new-node-empty",
			"PASS roles", "PASS slot-names: the slots and origins for n4 have names of their own", "PASS subscriptions: all 6 subscriptions enabled and replicating", "health check passed"} {
			if !strings.Contains(call.Messages(), want) {
				t.Errorf("pre-check output lacks %q:\n%s", want, call.Messages())
			}
		}
		// Upstream's positional form and upper-case check_type work too.
		mustSucceed(t, "positional pre-check", n4.Call(testContext(t),
			`CALL spock.health_check('n1', $1, 'n4', $2, 'PRE', true)`, n1.DSN(), n4.DSN()))
		// Without a new node: the cluster alone.
		mustSucceed(t, "cluster check", n2.Call(testContext(t), `CALL spock.health_check('n1', $1)`, n1.DSN()))
	})

	t.Run("user tables on the new node", func(t *testing.T) {
		exec(t, n4, `CREATE TABLE leftovers (id int)`)
		defer exec(t, n4, `DROP TABLE leftovers`)
		mustFail(t, "pre-check", pre(), "ZDH01", "new-node-empty", "public.leftovers")
	})

	t.Run("login role missing on the new node", func(t *testing.T) {
		exec(t, n1, `CREATE ROLE app_writer LOGIN`)
		defer exec(t, n1, `DROP ROLE app_writer`)
		mustFail(t, "pre-check", pre(), "ZDH01", "roles: n4 lacks roles that n1 has: app_writer")
	})

	t.Run("disabled subscription", func(t *testing.T) {
		exec(t, n3, `SELECT spock.sub_disable('sub_n2_n3', true)`)
		defer func() {
			exec(t, n3, `SELECT spock.sub_enable('sub_n2_n3', true)`)
			if err := c.WaitReplicating(testContext(t), convergeLimit); err != nil {
				t.Fatal(err)
			}
		}()
		mustFail(t, "pre-check", pre(), "ZDH01", "sub_n2_n3 on n3 is disabled")
	})

	t.Run("spock missing on the new node", func(t *testing.T) {
		exec(t, n5, `DROP EXTENSION spock`)
		mustFail(t, "pre-check", check(n4, n1, "n5", n5.DSN(), "pre"), "ZDH01", "Spock is not installed on n5")
	})

	t.Run("spock major.minor mismatch", func(t *testing.T) {
		// What the catalog says is what the check reads.
		exec(t, n4, `UPDATE pg_extension SET extversion = '5.1.0' WHERE extname = 'spock'`)
		defer exec(t, n4, `UPDATE pg_extension SET extversion = $1 WHERE extname = 'spock'`, value[string](t, n1, `SELECT extversion FROM pg_extension WHERE extname = 'spock'`))
		mustFail(t, "pre-check", pre(), "ZDH01", "spock-version: n4 has Spock 5.1.0")
		// Upstream's public helper, which its tests and runbooks call.
		mustFail(t, "check_spock_version_compatibility", n4.Call(testContext(t),
			`CALL spock.check_spock_version_compatibility($1, $2)`, n1.DSN(), n4.DSN()),
			"ZDC01", "Spock version mismatch: (new node) has Spock 5.1.0")
	})

	t.Run("check_spock_version_compatibility", func(t *testing.T) {
		res := n4.Call(testContext(t), `CALL spock.check_spock_version_compatibility(src_dsn => $1, new_node_dsn => $2, verb => true)`, n1.DSN(), n4.DSN())
		mustSucceed(t, "check_spock_version_compatibility", res)
		if !strings.Contains(res.Messages(), "Version check passed: Spock ") {
			t.Errorf("verb => true says nothing:\n%s", res.Messages())
		}
	})

	t.Run("unreachable node", func(t *testing.T) {
		if err := n3.Cluster.Stop(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := n3.Cluster.Start(); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitReplicating(testContext(t), convergeLimit); err != nil {
				t.Fatal(err)
			}
		}()
		mustFail(t, "pre-check", pre(), "ZDH01", "node n3 is unreachable")
	})

	t.Run("new node name taken", func(t *testing.T) {
		mustFail(t, "pre-check", check(n4, n1, "n2", n4.DSN(), "pre"), "ZDH01", "node name n2 is already used")
	})

	t.Run("bad check_type", func(t *testing.T) {
		mustFail(t, "check", check(n4, n1, "n4", n4.DSN(), "later"), "22023", "check_type must be 'pre' or 'post'")
	})

	t.Run("post", func(t *testing.T) {
		mustFail(t, "post-check before the join", check(n4, n1, "n4", n4.DSN(), "post"), "ZDH01", "membership")
		mustSucceed(t, "add_node n4", n4.AddNode(testContext(t), n1))
		call := check(n4, n1, "n4", n4.DSN(), "post")
		mustSucceed(t, "post-check", call)
		for _, want := range []string{"PASS subscription-from-new: sub_n4_n2 on n2 is replicating",
			"PASS subscription-to-new: sub_n3_n4 on n4 is replicating",
			"PASS discarded-transactions: no new entries in spock.exception_log on n4", "PASS row-counts"} {
			if !strings.Contains(call.Messages(), want) {
				t.Errorf("post-check output lacks %q:\n%s", want, call.Messages())
			}
		}
		// A broken direction fails the post-check.
		exec(t, n2, `SELECT spock.sub_disable('sub_n4_n2', true)`)
		mustFail(t, "post-check with sub_n4_n2 disabled", check(n4, n1, "n4", n4.DSN(), "post"), "ZDH01", "sub_n4_n2 on n2 is disabled")
	})
}
