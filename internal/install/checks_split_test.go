package install_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/render"
)

// zodan_checks is the list of the zodan_check_* routines: which of them
// report, in what order, for each kind of check, and what the 'post'
// checks say per direction. TestChecksVerdicts covers the 'pre' verdicts
// one by one.
func TestChecksListAndOrder(t *testing.T) {
	c, db, conn := installedDB(t, render.Options{})
	node := func(name string, subsFrom ...string) map[string]any {
		subs := []map[string]any{}
		for _, p := range subsFrom {
			subs = append(subs, map[string]any{"name": "sub_" + p + "_" + name, "enabled": true, "provider": p, "status": "replicating"})
		}
		return map[string]any{
			"spock": "5.0.11", "pgnum": 150018, "pgversion": "15.18", "db": "app", "wal_level": "logical",
			"track_commit_timestamp": "on", "free_slots": 8, "user_tables": []string{}, "roles": []string{"postgres", "app"},
			"user_schemas": []string{}, "zodan_locked": false, "local_node": name, "replicated_schemas": []string{"public"},
			"subscriptions": subs,
		}
	}
	// A cluster n1, n2, n3 (n3 unreachable) that n4 is to join.
	before := func() map[string]any {
		n4 := node("n4")
		n4["local_node"] = nil
		return map[string]any{"n1": node("n1", "n2", "n3"), "n2": node("n2", "n1", "n3"), "n4": n4}
	}
	unreachable := map[string]any{"n3": "could not connect: timeout"}
	// checks returns zodan_checks' rows as "ok name: detail", ok being
	// t, f or NULL.
	members := []string{"n1", "n2", "n3"}
	checks := func(checkType string, newNode *string, members []string, facts, unreachable map[string]any) []string {
		t.Helper()
		fs, err := json.Marshal(facts)
		if err != nil {
			t.Fatal(err)
		}
		us, err := json.Marshal(unreachable)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctxT(t), `SELECT CASE ok WHEN true THEN 't' WHEN false THEN 'f' ELSE 'NULL' END, check_name, detail
		                                    FROM zodan_ci.zodan_checks($1, 'n1', $2, $3, $4::jsonb, $5::jsonb)`,
			checkType, newNode, members, string(fs), string(us))
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var ok, name, detail string
			err := r.Scan(&ok, &name, &detail)
			return fmt.Sprintf("%s %s: %s", ok, name, detail), err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	names := func(rows []string) string {
		var ns []string
		for _, r := range rows {
			ns = append(ns, strings.TrimSuffix(strings.Fields(r)[1], ":"))
		}
		return strings.Join(ns, " ")
	}
	n4 := "n4"
	const common = "connect spock-version postgres-version output-plugin settings"
	const join = "lolor new-node-name slot-names new-node-empty roles existing-schemas replication-slots"

	t.Run("pre", func(t *testing.T) {
		facts := before()
		facts["n4"].(map[string]any)["links"] = map[string]any{"tested": 6, "failed": []string{}}
		got := checks("pre", &n4, members, facts, unreachable)
		if want := common + " no-operation-running subscriptions source-node node-connections " + join; names(got) != want {
			t.Errorf("pre checks:\n got %s\nwant %s", names(got), want)
		}
		for _, r := range got[1:] {
			if !strings.HasPrefix(r, "t ") {
				t.Errorf("healthy facts fail a check: %s", r)
			}
		}
		if want := "f connect: node n3 is unreachable: could not connect: timeout"; got[0] != want {
			t.Errorf("got %q, want %q", got[0], want)
		}
	})
	t.Run("add_node", func(t *testing.T) {
		// add_node holds the cluster lock itself, and without links there
		// is no node-connections.
		got := checks("add_node", &n4, members, before(), map[string]any{})
		if want := common + " subscriptions source-node " + join; names(got) != want {
			t.Errorf("add_node checks:\n got %s\nwant %s", names(got), want)
		}
		if want := "t connect: all 3 nodes reachable: n1, n2, n4"; got[0] != want {
			t.Errorf("got %q, want %q", got[0], want)
		}
	})
	t.Run("source unreachable", func(t *testing.T) {
		facts := before()
		delete(facts, "n1")
		got := checks("pre", &n4, members, facts, map[string]any{"n1": "down"})
		if want := common + " no-operation-running subscriptions new-node-name slot-names new-node-empty replication-slots"; names(got) != want {
			t.Errorf("checks without the source's facts:\n got %s\nwant %s", names(got), want)
		}
	})
	t.Run("health without a new node", func(t *testing.T) {
		for _, kind := range []string{"pre", "post"} {
			got := checks(kind, nil, members, before(), unreachable)
			if want := common + " no-operation-running subscriptions source-node"; names(got) != want {
				t.Errorf("%s checks without a new node:\n got %s\nwant %s", kind, names(got), want)
			}
		}
	})
	t.Run("post", func(t *testing.T) {
		facts := map[string]any{"n1": node("n1", "n2", "n3", "n4"), "n2": node("n2", "n1", "n3"), "n4": node("n4", "n1")}
		delete(facts["n4"].(map[string]any)["subscriptions"].([]map[string]any)[0], "status")
		got := checks("post", &n4, members, facts, unreachable)
		want := []string{
			"f connect: node n3 is unreachable: could not connect: timeout",
			"t spock-version: Spock 5.0.11 on every node (at least 5.0.9)",
			"t postgres-version: PostgreSQL 15 on every node",
			"t output-plugin: spock_output can be loaded on every node",
			"t settings: wal_level=logical and track_commit_timestamp=on on every node",
			"t no-operation-running: no add_node or remove_node is running",
			"t source-node: n1 is a Spock node",
			"t membership: n4 is a Spock node of the cluster",
			"t subscription-from-new: sub_n4_n1 on n1 is replicating",
			"NULL subscription-to-new: sub_n1_n4 on n4 is unknown",
			"f subscription-from-new: n2 has no subscription from n4",
			"f subscription-to-new: n4 has no subscription from n2",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("post checks:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	})
	t.Run("slot names", func(t *testing.T) {
		// Stands in for Spock's function: slot names keep [a-z0-9_] only.
		c.Exec(t, db, `CREATE SCHEMA spock`)
		c.Exec(t, db, `CREATE FUNCTION spock.spock_gen_slot_name(db name, provider name, sub name) RETURNS name
		               LANGUAGE sql IMMUTABLE
		               AS $$ SELECT left('spk_' || regexp_replace(db || '_' || provider || '_' || sub, '[^a-z0-9_]', '_', 'g'), 63)::name $$`)
		// n-3 and the existing n_3 would share slot names.
		facts := before()
		facts["n-3"] = facts["n4"]
		delete(facts, "n4")
		n3 := "n-3"
		var slots string
		for _, r := range checks("pre", &n3, []string{"n1", "n2", "n_3"}, facts, map[string]any{"n_3": "down"}) {
			if strings.Contains(r, " slot-names: ") {
				slots = r
			}
		}
		for _, want := range []string{"f slot-names: node name n-3 gives the same replication slot names as an existing node: spk_app_n1_sub_n1_n_3 (for n1->n",
			"n1->n-3", "n1->n_3", "spk_app_n_3_sub_n_3_n1 (for n", "; choose another name"} {
			if !strings.Contains(slots, want) {
				t.Errorf("got %q, want it to say %q", slots, want)
			}
		}
		// A name of its own passes.
		if got := checks("pre", &n4, members, before(), unreachable); !slices.Contains(got, "t slot-names: the slots and origins for n4 have names of their own") {
			t.Errorf("n4's slot names clash: %v", got)
		}
	})
}

// Every zodan_check_* routine is one of zodan_checks' list.
func TestChecksListsEveryCheck(t *testing.T) {
	_, _, conn := installedDB(t, render.Options{})
	rows, err := conn.Query(ctxT(t), `
		SELECT p.proname
		  FROM pg_proc p
		 WHERE p.pronamespace = $1::regnamespace AND p.proname LIKE 'zodan\_check\_%'
		   AND position(p.proname || '(c)' IN (SELECT prosrc FROM pg_proc
		                                        WHERE pronamespace = $1::regnamespace AND proname = 'zodan_checks')) = 0`, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	unlisted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(unlisted) > 0 {
		t.Errorf("zodan_checks does not call %v", unlisted)
	}
}
