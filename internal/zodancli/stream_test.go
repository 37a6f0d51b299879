package zodancli

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/pgtest"
)

// protocolStub speaks the procedures' NOTICE protocol: every kind of
// event once, in a known order, plus a NOTICE from outside zodan. It
// echoes the arguments that carry no password.
const protocolStub = `
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 1/10 checks: cluster of %s', new_node_name, src_node_name), ERRCODE = 'ZD001';
    IF verb THEN
        RAISE NOTICE USING MESSAGE = format('[add_node %s]   PASS roles: n2 has every role of n1', new_node_name), ERRCODE = 'ZD009';
    END IF;
    RAISE NOTICE USING MESSAGE = format('[add_node %s] location=%s country=%s info=%s timeout=%s db=%s', new_node_name,
        new_node_location, new_node_country, new_node_info, coalesce(sync_timeout::text, 'default'), current_database()), ERRCODE = 'ZD006';
    RAISE NOTICE USING MESSAGE = format('[add_node %s] still waiting for n1 to apply n3''s changes: at 0/1 of 0/2 after 30 s', new_node_name), ERRCODE = 'ZD004';
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 1/10 checks: done in 1.50 s', new_node_name), ERRCODE = 'ZD002';
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 6/10 hand-over: no other nodes', new_node_name), ERRCODE = 'ZD001';
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 6/10 hand-over: skipped in 0.00 s', new_node_name), ERRCODE = 'ZD003';
    RAISE WARNING USING MESSAGE = format('[add_node %s] replication sets of n1 changed during the join', new_node_name), ERRCODE = 'ZD010';
    RAISE NOTICE 'not from zodan';
    RAISE NOTICE USING MESSAGE = format('[add_node %s] %s joined the cluster in 1.60 s', new_node_name, new_node_name), ERRCODE = 'ZD005';`

func TestTextOutputShowsEveryEventAndASummary(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	stubProcedure(t, c, db, "zs", "add_node", protocolStub)

	r := runZodan(t, "add-node", "--schema", "zs", "--no-install", "--verbose", "--timeout", "90s",
		"--new-node-location", "Paris", "--new-node-country", "FR", "--new-node-info", `{"zone": "east"}`,
		"--src-node-name", "n1", "--src-dsn", c.DSN(db), "--new-node-name", "n2", "--new-node-dsn", c.DSN(db))
	if r.code != exitOK {
		t.Fatalf("want exit code 0\n%s", r)
	}
	stamp := `\[\s*\d+\.\ds\] `
	for _, re := range []string{
		`^add_node n2 \(source n1\), running on 127\.0\.0\.1:\d+/` + db + `\n`,
		`(?m)^` + stamp + `phase 1/10 checks: cluster of n1$`,
		`(?m)^` + stamp + `  PASS roles: n2 has every role of n1$`, // --verbose reached verb
		`(?m)^` + stamp + `location=Paris country=FR info={"zone": "east"} timeout=00:01:30 db=` + db + `$`,
		`(?m)^` + stamp + `still waiting for n1`,
		`(?m)^` + stamp + `WARNING: replication sets of n1 changed during the join$`,
		`(?m)^` + stamp + `NOTICE: not from zodan$`,
		`(?m)^` + stamp + `n2 joined the cluster in 1.60 s$`,
		`(?m)^Summary of add_node n2 \(source n1\):\n\s+1/10 checks\s+1\.50 s  done\n\s+6/10 hand-over\s+0\.00 s  skipped\n`,
		`(?m)^  1 warning\(s\), repeated from above:\n  - replication sets of n1 changed during the join$`,
		`(?m)^  result: succeeded in \d+\.\d s$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("stdout does not match %s\n%s", re, r)
		}
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("terminal escapes in output that is not a terminal\n%q", r.stdout)
	}
	if !strings.Contains(r.stderr, "zs.add_node(text,text,text,text,boolean,text,text,jsonb,interval) on 127.0.0.1") ||
		!strings.Contains(r.stderr, "was not installed by zodan-install") {
		t.Errorf("stderr does not say that a procedure zodan did not install is called as it is\n%s", r)
	}
}

func TestJSONOutputIsOneObjectPerLineEndingWithTheResult(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	stubProcedure(t, c, db, "zs", "add_node", protocolStub)

	r := runZodan(t, "add-node", "--json", "--schema", "zs", "--no-install",
		"--src-node-name", "n1", "--src-dsn", c.DSN(db), "--new-node-name", "n2", "--new-node-dsn", c.DSN(db))
	if r.code != exitOK {
		t.Fatalf("want exit code 0\n%s", r)
	}
	recs := jsonLines(t, r)
	var types []string
	last := -1.0
	for _, rec := range recs {
		types = append(types, rec["type"].(string))
		if rec["type"] == "result" {
			continue
		}
		elapsed, ok := rec["elapsed"].(float64)
		if !ok || elapsed < last {
			t.Errorf("elapsed missing or going back in %v", rec)
		}
		last = elapsed
		if _, ok := rec["message"].(string); !ok {
			t.Errorf("no message in %v", rec)
		}
	}
	want := []string{"install", "phase_start", "message", "waiting", "phase_done", "phase_start", "phase_skipped",
		"warning", "message", "report", "result"} // no detail: not --verbose
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("event types\n got %v\nwant %v\n%s", types, want, r)
	}

	start := recs[1]
	if start["phase"] != "checks" || start["phase_no"] != 1.0 || start["phase_total"] != 10.0 ||
		start["message"] != "phase 1/10 checks: cluster of n1" || start["operation"] != "add_node" || start["node"] != "n2" {
		t.Errorf("phase_start record: %v", start)
	}
	if m := recs[2]["message"].(string); !strings.Contains(m, "location=NY country=USA info={} timeout=default") {
		t.Errorf("the defaults did not reach the procedure: %q", m)
	}
	if done := recs[4]; done["seconds"] != 1.5 || done["outcome"] != "done" || done["phase"] != "checks" {
		t.Errorf("phase_done record: %v", done)
	}
	if skipped := recs[6]; skipped["outcome"] != "skipped" || skipped["phase_no"] != 6.0 {
		t.Errorf("phase_skipped record: %v", skipped)
	}

	result := recs[len(recs)-1]
	if result["ok"] != true || result["exit_code"] != 0.0 || result["error"] != nil {
		t.Errorf("result: %v", result)
	}
	wantPhases := []any{
		map[string]any{"phase": "checks", "phase_no": 1.0, "seconds": 1.5, "outcome": "done"},
		map[string]any{"phase": "hand-over", "phase_no": 6.0, "seconds": 0.0, "outcome": "skipped"},
	}
	if !reflect.DeepEqual(result["phases"], wantPhases) {
		t.Errorf("result phases\n got %v\nwant %v", result["phases"], wantPhases)
	}
	if w, _ := result["warnings"].([]any); len(w) != 1 {
		t.Errorf("result warnings: %v", result["warnings"])
	}
}

func TestJSONResultCarriesTheServerError(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	stubProcedure(t, c, db, "zs", "add_node", `
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 3/10 prepare-peers: slots for n3', new_node_name), ERRCODE = 'ZD001';
    RAISE EXCEPTION 'add_node n2 failed in phase 3/10 prepare-peers: slot exists'
        USING ERRCODE = 'ZDC02', DETAIL = 'Everything add_node had created was removed.', HINT = 'Drop the slot.';`)

	r := runZodan(t, "add-node", "--json", "--schema", "zs", "--no-install",
		"--src-node-name", "n1", "--src-dsn", c.DSN(db), "--new-node-name", "n2", "--new-node-dsn", c.DSN(db))
	if r.code != exitFailed {
		t.Fatalf("want exit code 1\n%s", r)
	}
	recs := jsonLines(t, r)
	result := recs[len(recs)-1]
	wantError := map[string]any{"sqlstate": "ZDC02", "message": "add_node n2 failed in phase 3/10 prepare-peers: slot exists",
		"detail": "Everything add_node had created was removed.", "hint": "Drop the slot."}
	if result["type"] != "result" || result["ok"] != false || result["exit_code"] != 1.0 || !reflect.DeepEqual(result["error"], wantError) {
		t.Errorf("result: %v", result)
	}
	if ph := result["phases"].([]any); len(ph) != 1 || ph[0].(map[string]any)["outcome"] != "failed" {
		t.Errorf("the running phase is not marked failed: %v", result["phases"])
	}
	if !strings.Contains(r.stderr, "(SQLSTATE ZDC02)\n  DETAIL: Everything") {
		t.Errorf("stderr does not show the error\n%s", r)
	}
}

// Each command connects where the issue says and passes its flags to the
// procedure's named parameters (the stubs print booleans as t/f).
func TestCommandsConnectToTheRightNodeAndPassTheirArguments(t *testing.T) {
	c := pgtest.Shared(t)
	src, newNode, target, survivor := c.Database(t), c.Database(t), c.Database(t), c.Database(t)
	for _, db := range []string{src, newNode} {
		stubProcedure(t, c, db, "zs", "health_check", `
    RAISE NOTICE USING MESSAGE = format('[health_check %s] ran on %s: %s-check, new node given: %s, verb: %s, timeout: %s',
        coalesce(new_node_name, src_node_name), current_database(), check_type, new_node_dsn IS NOT NULL, verb,
        coalesce(sync_timeout::text, 'default')), ERRCODE = 'ZD005';`)
	}
	for _, db := range []string{target, survivor} {
		stubProcedure(t, c, db, "zs", "remove_node", `
    RAISE NOTICE USING MESSAGE = format('[remove_node %s] ran on %s: target DSN given: %s, leads to the target: %s, verbose: %s',
        target_node_name, current_database(), target_node_dsn IS NOT NULL,
        coalesce(target_node_dsn LIKE '%dbname=`+target+`%', false), verbose_mode), ERRCODE = 'ZD005';`)
	}
	common := []string{"--json", "--schema", "zs", "--no-install"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"health check of a new node runs on it",
			[]string{"health-check", "--check-type", "post", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", c.DSN(newNode), "--timeout", "2m"},
			"ran on " + newNode + ": post-check, new node given: t, verb: f, timeout: 00:02:00"},
		{"health check of the cluster runs on the source",
			[]string{"health_check", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--verbose"},
			"ran on " + src + ": pre-check, new node given: f, verb: t, timeout: default"},
		{"removal runs on the target",
			[]string{"remove-node", "--target-node-name", "n2", "--target-dsn", c.DSN(target)},
			"ran on " + target + ": target DSN given: t, leads to the target: t, verbose: f"},
		{"removal with zodremove.py's flag name",
			[]string{"remove_node", "--target-node-name", "n2", "--target-node-dsn", c.DSN(target), "-v"},
			"ran on " + target + ": target DSN given: t, leads to the target: t, verbose: t"},
		{"removal of a dead node runs elsewhere",
			[]string{"remove-node", "--target-node-name", "n2", "--run-on-dsn", c.DSN(survivor)},
			"ran on " + survivor + ": target DSN given: f, leads to the target: f, verbose: f"},
		{"removal elsewhere with the target's DSN",
			[]string{"remove-node", "--target-node-name", "n2", "--target-dsn", c.DSN(target), "--run-on-dsn", c.DSN(survivor)},
			"ran on " + survivor + ": target DSN given: t, leads to the target: t, verbose: f"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runZodan(t, append(tc.args, common...)...)
			if r.code != exitOK {
				t.Fatalf("want exit code 0\n%s", r)
			}
			var reports []string
			for _, rec := range jsonLines(t, r) {
				if rec["type"] == "report" {
					reports = append(reports, rec["message"].(string))
				}
			}
			if len(reports) != 1 || reports[0] != tc.want {
				t.Errorf("reports %q, want %q", reports, tc.want)
			}
		})
	}
}
