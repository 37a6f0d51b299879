package zodancli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/pgtest"
)

// On plain PostgreSQL the real health check runs and fails its Spock
// checks: exit code 3, with every check on stdout and the error, its
// SQLSTATE, DETAIL and HINT on stderr.
func TestHealthCheckOnPlainPostgresFailsWithExit3(t *testing.T) {
	c := pgtest.Shared(t)
	src, newNode := c.Database(t), c.Database(t)
	installInto(t, c, src, "zt")
	installInto(t, c, newNode, "zt")

	r := runZodan(t, "health-check", "--schema", "zt", "--check-type", "pre",
		"--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", c.DSN(newNode))
	if r.code != exitHealthCheckFailed {
		t.Fatalf("want exit code 3\n%s", r)
	}
	for _, re := range []string{
		`(?m)^\[\s*\d+\.\ds\] pre-check of node n2 with source n1$`,
		`(?m)^\[\s*\d+\.\ds\] PASS connect: `,
		`(?m)^\[\s*\d+\.\ds\] FAIL spock-version: Spock is not installed on n1`,
		`(?m)^  checks: \d+ passed, [1-9]\d* failed$`,
		`(?m)^  result: health check FAILED after \d+\.\d s \(exit code 3\)`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("stdout does not match %s\n%s", re, r)
		}
	}
	for _, want := range []string{"(SQLSTATE ZDH01)", "DETAIL: spock-version:", "HINT: Fix what the FAIL lines name"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not show %q\n%s", want, r)
		}
	}
}

// add_node fails in its first phase on plain PostgreSQL: exit code 1, the
// phase shown as failed, and the procedure's DETAIL (what was cleaned up)
// and HINT passed on.
func TestAddNodeThatFailsShowsThePhaseAndTheCleanup(t *testing.T) {
	c := pgtest.Shared(t)
	src, newNode := c.Database(t), c.Database(t)
	installInto(t, c, newNode, "zt")

	r := runZodan(t, "add-node", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(src),
		"--new-node-name", "n2", "--new-node-dsn", c.DSN(newNode))
	if r.code != exitFailed {
		t.Fatalf("want exit code 1\n%s", r)
	}
	if !regexp.MustCompile(`(?m)^\s+1/10 checks\s+\d+\.\d\d s  failed$`).MatchString(r.stdout) {
		t.Errorf("the summary does not show phase 1 as failed\n%s", r)
	}
	for _, want := range []string{"add_node n2 failed in phase 1/10 checks", "(SQLSTATE ZDC01)", "DETAIL: Nothing had been created.", "HINT: "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not show %q\n%s", want, r)
		}
	}
}
