//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/installcli"
	"github.com/zodan-project/zodan/internal/render"
	"github.com/zodan-project/zodan/internal/spocktest"
	"github.com/zodan-project/zodan/internal/zodancli"
)

type cliRun struct {
	code           int
	stdout, stderr string
}

func zodan(t *testing.T, args ...string) cliRun {
	t.Helper()
	var out, errb bytes.Buffer
	code := zodancli.Main(append([]string{"zodan"}, args...), &out, &errb)
	return cliRun{code, out.String(), errb.String()}
}

func zodanInstall(t *testing.T, args ...string) cliRun {
	t.Helper()
	var out, errb bytes.Buffer
	code := installcli.Main(append([]string{"zodan-install"}, args...), &out, &errb)
	return cliRun{code, out.String(), errb.String()}
}

func (r cliRun) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// The installer on a real three-node cluster: install, status and
// uninstall with --cluster; nothing it does reaches other nodes through
// AutoDDL; the psql script installs on a Spock node and health_check runs.
func TestInstallerOnSpockCluster(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1, n2, n3 := c.Get("n1"), c.Get("n2"), c.Get("n3")

	r := zodanInstall(t, "uninstall", "--dsn", n1.DSN(), "--cluster")
	if r.code != 0 {
		t.Fatalf("uninstall --cluster: %s", r)
	}
	t.Logf("zodan-install uninstall --cluster:\n%s", r.stdout)
	r = zodanInstall(t, "install", "--dsn", n1.DSN(), "--cluster")
	if r.code != 0 || strings.Count(r.stdout, ": installed version 0 -> 3 (zodan ") != 3 {
		t.Fatalf("install --cluster: %s", r)
	}
	t.Logf("zodan-install install --cluster:\n%s", r.stdout)
	r = zodanInstall(t, "status", "--dsn", n1.DSN(), "--cluster")
	if r.code != 0 || strings.Count(r.stdout, ": version 3 (zodan ") != 3 || !strings.Contains(r.stdout, "procedures exactly as released in zodan 1.1.0") {
		t.Fatalf("status --cluster: %s", r)
	}
	t.Logf("zodan-install status --cluster:\n%s", r.stdout)

	// Nothing the installer did was replicated: no DDL queued, none of
	// its tables in a replication set, and removing it from one node
	// leaves the others' installs alone.
	for _, n := range c.Nodes {
		if q := value[int64](t, n, `SELECT count(*) FROM spock.queue`); q != 0 {
			t.Errorf("%s queued %d DDL statements for replication", n.Name, q)
		}
		if q := value[int64](t, n, `SELECT count(*) FROM spock.tables WHERE relname LIKE 'zodan%' AND set_name IS NOT NULL`); q != 0 {
			t.Errorf("%s has %d zodan tables in replication sets", n.Name, q)
		}
	}
	if r := zodanInstall(t, "uninstall", "--dsn", n1.DSN()); r.code != 0 {
		t.Fatalf("uninstall on n1: %s", r)
	}
	if err := c.WaitReplicating(testContext(t), time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*spocktest.Node{n2, n3} {
		if !value[bool](t, n, `SELECT to_regprocedure('spock.add_node(text,text,text,text,boolean,text,text,jsonb,interval)') IS NOT NULL`) {
			t.Errorf("uninstalling on n1 removed add_node from %s", n.Name)
		}
	}

	// The psql script on a Spock node, then a health check.
	script, err := install.Script(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "zodan.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	psql := osexec.Command(filepath.Join(binDir, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", n1.DSN(), "-f", file)
	psql.Env = append(os.Environ(), "PGOPTIONS=-c check_function_bodies=on")
	out, err := psql.CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f zodan.sql on n1: %v\n%s", err, out)
	}
	t.Logf("psql -f zodan.sql on n1:\n%s", out)
	mustSucceed(t, "health_check after the psql install", n1.Call(testContext(t),
		`CALL spock.health_check('n1', $1)`, n1.DSN()))
	if r := zodanInstall(t, "uninstall", "--dsn", n1.DSN(), "--cluster"); r.code != 0 || strings.Count(r.stdout, "uninstalled version 3") != 3 {
		t.Fatalf("uninstall --cluster: %s", r)
	}

	// A node that is down: the others are installed, it is named.
	if err := n3.Cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	r = zodanInstall(t, "install", "--dsn", n1.DSN(), "--cluster")
	if r.code != 1 || strings.Count(r.stdout, ": installed version 0 -> 3") != 2 ||
		!strings.Contains(r.stdout, "n3 (") || !strings.Contains(r.stdout, "FAILED") ||
		!strings.Contains(r.stderr, "failed on 1 of 3 nodes: n3") {
		t.Errorf("install --cluster with n3 down: %s", r)
	}
	t.Logf("zodan-install install --cluster with n3 down:\n%s%s", r.stdout, r.stderr)
	if err := n3.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
	if r := zodanInstall(t, "uninstall", "--dsn", n1.DSN(), "--cluster"); r.code != 0 {
		t.Fatalf("uninstall --cluster: %s", r)
	}
	for _, n := range c.Nodes {
		if left := value[int64](t, n, `SELECT count(*) FROM pg_proc WHERE pronamespace = 'spock'::regnamespace
		                               AND (proname LIKE 'zodan%' OR proname IN ('add_node', 'remove_node', 'health_check'))`); left != 0 {
			t.Errorf("%s still has %d zodan routines", n.Name, left)
		}
	}
}

// zodan add-node, health-check and remove-node against a real cluster,
// in text and in JSON.
func TestZodanCLI(t *testing.T) {
	c := mesh(t, "n1", "n2", "n3")
	n1 := c.Get("n1")
	n4 := nodes(t, "n4")[0]
	// zodan installs the procedures where they are missing.
	if r := zodanInstall(t, "uninstall", "--dsn", n4.DSN()); r.code != 0 {
		t.Fatalf("uninstall on n4: %s", r)
	}
	exec(t, n1, pairsTable)
	if err := spocktest.WaitForRelation(testContext(t), c.Nodes, "pairs", time.Minute); err != nil {
		t.Fatal(err)
	}
	common := []string{"--src-node-name", "n1", "--src-dsn", n1.DSN(), "--new-node-name", "n4", "--new-node-dsn", n4.DSN()}

	r := zodan(t, append([]string{"health-check", "--check-type", "pre"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "PASS new-node-empty") {
		t.Fatalf("zodan health-check --check-type pre: %s", r)
	}
	if !strings.Contains(r.stdout+r.stderr, "install") {
		t.Errorf("zodan did not say it installed the procedures on n4: %s", r)
	}
	t.Logf("zodan health-check:\n%s%s", r.stdout, r.stderr)

	r = zodan(t, append([]string{"add-node"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "n4 joined the cluster") {
		t.Fatalf("zodan add-node: %s", r)
	}
	t.Logf("zodan add-node:\n%s", r.stdout)

	r = zodan(t, append([]string{"health-check", "--check-type", "post"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "PASS subscription-to-new") {
		t.Fatalf("zodan health-check --check-type post: %s", r)
	}

	r = zodan(t, "remove-node", "--target-node-name", "n4", "--target-dsn", n4.DSN())
	if r.code != 0 || !strings.Contains(r.stdout, "n4 removed") {
		t.Fatalf("zodan remove-node: %s", r)
	}
	t.Logf("zodan remove-node:\n%s", r.stdout)
	noTraces(t, "n4", c.Nodes...)

	// The removed node keeps its data; add-node wants an empty database.
	exec(t, n4, `DROP TABLE pairs`)
	r = zodan(t, append([]string{"add-node", "--json"}, common...)...)
	if r.code != 0 {
		t.Fatalf("zodan add-node --json: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	types := map[string]int{}
	var last map[string]any
	for _, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("stdout line is not JSON: %q", l)
		}
		types[ev["type"].(string)]++
		last = ev
	}
	if types["phase_start"] != 10 || types["phase_done"]+types["phase_skipped"] != 10 || last["type"] != "result" || last["ok"] != true {
		t.Errorf("JSON stream: %d lines, types %v, last %v", len(lines), types, last)
	}
	t.Logf("zodan add-node --json (first and last lines):\n%s\n...\n%s", strings.Join(lines[:3], "\n"), lines[len(lines)-1])
	rowsEverywhere(t, "after the CLI", append(c.Nodes, n4)...)
}
