package zodancli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// The tests do not run in parallel: urfave/cli mutates its package-level
// help and version flags on every run, so two apps running at once in one
// process race (harmless for zodan, one app per process, but not for the
// race detector).

// asZodan makes the test binary act as the zodan command, for tests that
// need a real process (shell completion).
const asZodan = "ZODAN_TEST_BINARY_IS_ZODAN"

func TestMain(m *testing.M) {
	if os.Getenv(asZodan) == "1" {
		os.Exit(Main(os.Args, os.Stdout, os.Stderr))
	}
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// ran is what one in-process run of zodan left behind.
type ran struct {
	code           int
	stdout, stderr string
}

// lockedBuffer lets a test read output while a run still writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runZodan runs the command in-process, as "zodan args...".
func runZodan(t *testing.T, args ...string) ran {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return zodanContext(ctx, args...)
}

func zodanContext(ctx context.Context, args ...string) ran {
	var stdout, stderr lockedBuffer
	code := run(ctx, append([]string{"zodan"}, args...), &stdout, &stderr)
	return ran{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r ran) String() string {
	return fmt.Sprintf("exit code %d\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// installInto installs this build's procedures into a fresh schema of db:
// outside the spock schema the installer needs no Spock.
func installInto(t *testing.T, c *pgtest.Cluster, db, schema string) {
	t.Helper()
	c.Exec(t, db, "CREATE SCHEMA "+schema)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := install.New(c.Connect(t, db), schema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Install(ctx); err != nil {
		t.Fatalf("installing the procedures into %s: %v", schema, err)
	}
}

// installedVersion is the version of the procedures in schema of db.
func installedVersion(t *testing.T, c *pgtest.Cluster, db, schema string) int32 {
	t.Helper()
	in, err := install.New(c.Connect(t, db), schema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Inspect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Version
}

// jsonLines parses every line of stdout as one JSON object, failing the
// test on anything else.
func jsonLines(t *testing.T, r ran) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stdout line %d is not a JSON object (%v): %q\n%s", i+1, err, line, r)
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		t.Fatalf("no JSON on stdout\n%s", r)
	}
	return recs
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procedureParams are the parameter lists of the real procedures, for
// stubs that must be called exactly as the real ones are.
var procedureParams = map[string]string{
	"add_node": `src_node_name text, src_dsn text, new_node_name text, new_node_dsn text,
		verb boolean DEFAULT false, new_node_location text DEFAULT 'NY', new_node_country text DEFAULT 'USA',
		new_node_info jsonb DEFAULT '{}', sync_timeout interval DEFAULT NULL`,
	"remove_node": `target_node_name text, target_node_dsn text DEFAULT NULL, verbose_mode boolean DEFAULT true,
		sync_timeout interval DEFAULT NULL`,
	"health_check": `src_node_name text, src_dsn text, new_node_name text DEFAULT NULL, new_node_dsn text DEFAULT NULL,
		check_type text DEFAULT 'pre', verb boolean DEFAULT false, sync_timeout interval DEFAULT NULL`,
}

// stubProcedure creates schema.proc in db with the real procedure's
// parameters and body as its PL/pgSQL body: a way to make the server send
// any sequence of NOTICEs, or to sleep, without Spock. The CLI calls it
// with --schema schema --no-install.
func stubProcedure(t *testing.T, c *pgtest.Cluster, db, schema, proc, body string) {
	t.Helper()
	c.Exec(t, db, fmt.Sprintf("CREATE SCHEMA IF NOT EXISTS %s; CREATE PROCEDURE %s.%s(%s) LANGUAGE plpgsql AS $stub$\nBEGIN\n%s\nEND\n$stub$",
		schema, schema, proc, procedureParams[proc], body))
}
