package install_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/render"
)

// zodan_checks is a pure function of the facts it is given, so every
// verdict can be tested here, including ones a test cluster cannot be put
// into (mixed PostgreSQL majors, a full slot table).
func TestChecksVerdicts(t *testing.T) {
	_, _, conn := installedDB(t, render.Options{})
	node := func(name string, changes map[string]any) map[string]any {
		f := map[string]any{
			"spock": "5.0.11", "pgnum": 150018, "pgversion": "15.18", "db": "app", "wal_level": "logical",
			"track_commit_timestamp": "on", "free_slots": 8, "user_tables": []string{}, "roles": []string{"postgres", "app"},
			"user_schemas": []string{}, "zodan_locked": false, "local_node": name, "replicated_schemas": []string{"public"},
			"subscriptions": []map[string]any{{"name": "sub_x_" + name, "enabled": true, "provider": "x", "status": "replicating"}},
		}
		for k, v := range changes {
			f[k] = v
		}
		return f
	}
	healthy := func() map[string]any {
		return map[string]any{
			"n1": node("n1", nil), "n2": node("n2", nil),
			"n4": node("n4", map[string]any{"local_node": nil, "subscriptions": []any{}}),
		}
	}
	verdicts := func(facts map[string]any) map[string]string {
		t.Helper()
		js, err := json.Marshal(facts)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctxT(t), `SELECT ok, check_name, detail FROM zodan_ci.zodan_checks('pre', 'n1', 'n4', '{n1,n2}', $1::jsonb, '{}')`, string(js))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var ok bool
			var name, detail string
			if err := rows.Scan(&ok, &name, &detail); err != nil {
				t.Fatal(err)
			}
			if !ok {
				out[name] = detail
			}
		}
		return out
	}

	if failed := verdicts(healthy()); len(failed) != 0 {
		t.Errorf("healthy facts fail checks: %v", failed)
	}
	for _, c := range []struct {
		name  string
		edit  func(map[string]any)
		check string
		want  string
	}{
		{"new node on an older PostgreSQL than the source", func(f map[string]any) {
			f["n1"] = node("n1", map[string]any{"pgnum": 160003, "pgversion": "16.3"})
		}, "postgres-version", "n4 runs PostgreSQL 15.18, older than the source n1's 16.3: the copy runs n4's pg_dump against n1"},
		{"new node on an older Spock than a peer", func(f map[string]any) { f["n2"] = node("n2", map[string]any{"spock": "6.0.0"}) },
			"spock-version", "n4 has Spock 5.0.11, older than n2 (6.0.0): a node may not join a cluster that runs a newer Spock major.minor; install Spock 6.0 on n4"},
		{"new node on a newer Spock than its source", func(f map[string]any) { f["n4"].(map[string]any)["spock"] = "6.0.0" },
			"spock-version", "n4 has Spock 6.0.0, its source n1 has Spock 5.0.11: the initial copy needs the same Spock major.minor on both ends"},
		{"source replicates large objects, new node lacks lolor", func(f map[string]any) {
			f["n1"].(map[string]any)["replicated_schemas"] = []string{"public", "lolor"}
			f["n4"].(map[string]any)["lolor"] = false
		}, "lolor", "the source n1 replicates large objects (lolor tables), but database app on n4 does not have the lolor extension installed. Please run CREATE EXTENSION lolor"},
		{"large objects already on the new node", func(f map[string]any) {
			f["n4"].(map[string]any)["lolor"] = true
			f["n4"].(map[string]any)["lolor_rows"] = 2
		}, "lolor", "database app on n4 has pre-existing large object data in the lolor tables (2 rows)"},
		{"spock_output not allowed", func(f map[string]any) {
			f["n2"] = node("n2", map[string]any{"output_plugins": "pgoutput, test_decoding"})
		},
			"output-plugin", "n2 has output_plugin_libraries = 'pgoutput, test_decoding', without spock_output"},
		{"a connection the join needs fails", func(f map[string]any) {
			f["n4"].(map[string]any)["links"] = map[string]any{"tested": 9, "failed": []string{"n2 -> n4 (replication connection): FATAL: no"}}
		}, "node-connections", "n2 -> n4 (replication connection): FATAL: no"},
		{"Spock too old", func(f map[string]any) { f["n2"] = node("n2", map[string]any{"spock": "5.0.4"}) },
			"spock-version", "n2 has Spock 5.0.4, older than 5.0.9"},
		{"Spock missing", func(f map[string]any) { f["n4"].(map[string]any)["spock"] = nil },
			"spock-version", "Spock is not installed on n4"},
		{"wal_level", func(f map[string]any) { f["n2"] = node("n2", map[string]any{"wal_level": "replica"}) },
			"settings", "n2 has wal_level=replica"},
		{"no free slots", func(f map[string]any) { f["n4"].(map[string]any)["free_slots"] = 1 },
			"replication-slots", "n4 has 1 free replication slots, needs 2"},
		{"operation running", func(f map[string]any) {
			f["n2"] = node("n2", map[string]any{"zodan_locked": true, "zodan_lock_holder": "zodan add_node n9 (op 3 on n9)"})
		}, "no-operation-running", "n2 is locked by zodan add_node n9 (op 3 on n9)"},
		{"schema would be skipped", func(f map[string]any) {
			f["n4"].(map[string]any)["user_schemas"] = []string{"public2", "sales"}
			f["n1"].(map[string]any)["replicated_schemas"] = []string{"sales"}
		},
			"existing-schemas", "schemas sales exist on n4"},
		{"source is another node", func(f map[string]any) { f["n1"].(map[string]any)["local_node"] = "n2" },
			"source-node", "the source DSN leads to node n2, not n1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			facts := healthy()
			c.edit(facts)
			failed := verdicts(facts)
			if !strings.Contains(failed[c.check], c.want) {
				t.Errorf("check %s: got %q, want it to say %q (all failures: %v)", c.check, failed[c.check], c.want, failed)
			}
		})
	}
}
