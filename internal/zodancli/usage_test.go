package zodancli

import (
	"strings"
	"testing"
)

// A DSN nothing listens on: the usage errors must come before any
// connection attempt.
const unreachableDSN = "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2"

func TestUsageErrorsExitWith2AndSayWhatIsWrong(t *testing.T) {
	t.Setenv("ZODAN_SRC_DSN", "")
	t.Setenv("ZODAN_NEW_NODE_DSN", "")
	t.Setenv("ZODAN_TARGET_DSN", "")
	t.Setenv("ZODAN_RUN_ON_DSN", "")
	add := []string{"add-node", "--src-node-name", "n1", "--src-dsn", unreachableDSN, "--new-node-name", "n2", "--new-node-dsn", unreachableDSN}
	check := []string{"health-check", "--src-node-name", "n1", "--src-dsn", unreachableDSN}
	cases := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"missing flag", []string{"add-node", "--src-node-name", "n1", "--new-node-name", "n2", "--new-node-dsn", unreachableDSN}, "missing required flag --src-dsn (or $ZODAN_SRC_DSN)"},
		{"every missing flag named", []string{"add-node"}, "--src-node-name, --src-dsn (or $ZODAN_SRC_DSN), --new-node-name, --new-node-dsn"},
		{"node info not JSON", append(add, "--new-node-info", "{zone: east}"), "--new-node-info is not valid JSON"},
		{"node info an array", append(add, "--new-node-info", `["east"]`), "--new-node-info must be a JSON object"},
		{"node info null", append(add, "--new-node-info", "null"), "not null"},
		{"check type in capitals", append(check, "--check-type", "PRE"), `--check-type must be pre or post, not "PRE"`},
		{"check type unknown", append(check, "--check-type", "during"), `not "during"`},
		{"stray argument", []string{"add-node", "--src-node-name", "n1", "extra", "--src-dsn", unreachableDSN}, `unexpected argument "extra"`},
		{"stray argument after all flags", append(add, "now"), `unexpected argument "now"`},
		{"unknown flag", append(add, "--sync-timeout", "5m"), "flag provided but not defined: -sync-timeout"},
		{"timeout not a duration", append(add, "--timeout", "5 minutes"), `invalid value "5 minutes" for flag -timeout`},
		{"timeout zero", append(add, "--timeout", "0s"), "--timeout 0s: give at least one second"},
		{"new node name without DSN", append(check, "--new-node-name", "n2"), "give both --new-node-name and --new-node-dsn, or neither"},
		{"removal without any DSN", []string{"remove-node", "--target-node-name", "n2"}, "give --target-dsn"},
		{"removal without target", []string{"remove-node", "--target-dsn", unreachableDSN}, "missing required flag --target-node-name"},
		{"bad schema", append(check, "--schema", "Zodan-Test"), "--schema: schema name"},
		{"unknown command", []string{"add-nodes"}, `unknown command "add-nodes"`},
		{"completion without shell", []string{"completion"}, "bash or zsh"},
		{"completion for fish", []string{"completion", "fish"}, `no completion for "fish"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runZodan(t, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("want exit code %d\n%s", exitUsage, r)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not say %q\n%s", tc.want, r)
			}
			if r.stdout != "" {
				t.Errorf("a usage error printed on stdout (help belongs to --help)\n%s", r)
			}
		})
	}
}

func TestNoCommandShowsHelpAndExits2(t *testing.T) {
	r := runZodan(t)
	if r.code != exitUsage || !strings.Contains(r.stdout, "add-node") || !strings.Contains(r.stderr, "no command given") {
		t.Fatalf("want the help and exit code 2\n%s", r)
	}
}

func TestHelpOfEveryCommandHasAnExample(t *testing.T) {
	for _, cmd := range []string{"add-node", "health-check", "remove-node", "completion", "add_node", "remove_node", "health_check"} {
		r := runZodan(t, cmd, "--help")
		if r.code != exitOK || !strings.Contains(r.stdout, "Example") || !strings.Contains(r.stdout, "zodan ") {
			t.Errorf("%s --help: want an example and exit code 0\n%s", cmd, r)
		}
	}
}

func TestHelpDoesNotShowDSNsFromTheEnvironment(t *testing.T) {
	t.Setenv("ZODAN_SRC_DSN", "host=db1 password=from-the-environment")
	r := runZodan(t, "add-node", "--help")
	if r.code != exitOK || strings.Contains(r.stdout, "from-the-environment") || !strings.Contains(r.stdout, "[$ZODAN_SRC_DSN]") {
		t.Errorf("want the variable's name in the help, not its value\n%s", r)
	}
}

func TestUsageErrorWithJSONEndsWithAResultLine(t *testing.T) {
	r := runZodan(t, "health-check", "--json", "--src-node-name", "n1", "--src-dsn", unreachableDSN, "--check-type", "later")
	if r.code != exitUsage {
		t.Fatalf("want exit code 2\n%s", r)
	}
	recs := jsonLines(t, r)
	if len(recs) != 1 || recs[0]["type"] != "result" || recs[0]["ok"] != false || recs[0]["exit_code"] != float64(exitUsage) {
		t.Fatalf("want exactly one failed result with exit code 2 on stdout\n%s", r)
	}
	if msg, _ := recs[0]["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "--check-type") {
		t.Errorf("the result's error does not name the flag: %q", msg)
	}
}

func TestDSNsComeFromTheEnvironment(t *testing.T) {
	// With the DSNs from ZODAN_*, the flags are complete, so zodan gets as
	// far as connecting (and fails there, with 1, not with a usage error).
	t.Setenv("ZODAN_SRC_DSN", unreachableDSN)
	t.Setenv("ZODAN_NEW_NODE_DSN", unreachableDSN)
	t.Setenv("ZODAN_TARGET_DSN", unreachableDSN)
	t.Setenv("ZODAN_RUN_ON_DSN", "")
	for _, args := range [][]string{
		{"add-node", "--src-node-name", "n1", "--new-node-name", "n2"},
		{"health-check", "--src-node-name", "n1"},
		{"remove-node", "--target-node-name", "n2"},
	} {
		r := runZodan(t, args...)
		if r.code != exitFailed || !strings.Contains(r.stderr, "cannot connect to 127.0.0.1:1/nowhere") {
			t.Errorf("%s: want a connection failure (exit code 1)\n%s", args[0], r)
		}
	}
}

func TestJSONRequested(t *testing.T) {
	cases := map[string]bool{
		"zodan add-node --json":                true,
		"zodan add-node -json":                 true,
		"zodan add-node --json=true":           true,
		"zodan add-node --json=false":          false,
		"zodan add-node":                       false,
		"zodan add-node --jsonl":               false,
		"zodan add-node -- --json":             false,
		"zodan add-node --src-node-name json":  false,
		"zodan add-node --json --json=0":       false,
		"zodan --json add-node --src-dsn x=1 ": true,
	}
	for line, want := range cases {
		if got := jsonRequested(strings.Fields(line)); got != want {
			t.Errorf("jsonRequested(%q) = %v, want %v", line, got, want)
		}
	}
}
