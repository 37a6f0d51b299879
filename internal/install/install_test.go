package install_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// installLockKey is the advisory lock zodan-install holds while it changes
// a node (install.lockKey).
const installLockKey int64 = 0x7a6f64616e0001

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two installers racing on one node: the advisory lock makes one install
// and the other find nothing to do; neither fails.
func TestConcurrentInstalls(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	ctx := ctxT(t)

	const n = 2
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conns[i] = c.Connect(t, db)
	}
	results := make([]install.Result, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := install.New(conns[i], testSchema, render.Options{})
			if err != nil {
				errs[i] = err
				return
			}
			<-start
			results[i], errs[i] = in.Install(ctx)
		}()
	}
	// Hold the installers' lock so that both are provably in flight at
	// once, waiting for it, before either can start.
	holder := c.Connect(t, db)
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", installLockKey); err != nil {
		t.Fatal(err)
	}
	close(start)
	waitFor(t, "both installers to wait for the install lock", func() (bool, error) {
		var waiting int
		err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting)
		return waiting == n, err
	})
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", installLockKey); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	installed := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("installer %d failed: %v", i, errs[i])
			continue
		}
		if results[i].To != install.Latest() {
			t.Errorf("installer %d ended at version %d, want %d", i, results[i].To, install.Latest())
		}
		if results[i].From == 0 {
			installed++
		}
		if results[i].Repaired {
			t.Errorf("installer %d repaired the other's fresh install", i)
		}
	}
	if installed != 1 {
		t.Errorf("%d installers started from version 0, want exactly 1 (the other waits for the lock and finds nothing to do): %+v", installed, results)
	}

	in, err := install.New(c.Connect(t, db), testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != install.Latest() || st.Release != zodan.Version || len(st.Drift) != 0 {
		t.Errorf("after concurrent installs: version %d, release %q, drift %v", st.Version, st.Release, st.Drift)
	}
	if ok, why, err := in.CodeMatches(st); err != nil || !ok {
		t.Errorf("after concurrent installs the code does not match: %s %v", why, err)
	}
	var routines, manifest int
	if err := conns[0].QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace),
		(SELECT count(*) FROM `+testSchema+`.zodan_code_object)`, testSchema).Scan(&routines, &manifest); err != nil {
		t.Fatal(err)
	}
	if routines == 0 || routines != manifest {
		t.Errorf("%d routines in %s, %d in the manifest", routines, testSchema, manifest)
	}
}

func TestInstallerRejects(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	conn := c.Connect(t, db)
	ctx := ctxT(t)

	if _, err := install.New(conn, "Bad Schema", render.Options{}); err == nil || !strings.Contains(err.Error(), `"Bad Schema"`) {
		t.Errorf("New with an invalid schema name: %v", err)
	}
	in, err := install.New(conn, "missing_schema", render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Install(ctx); err == nil || !strings.Contains(err.Error(), "schema missing_schema does not exist") {
		t.Errorf("install into a missing schema: %v", err)
	}
	for _, v := range []int32{-1, install.Latest() + 1} {
		if _, err := in.MigrateTo(ctx, v); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("MigrateTo(%d): %v", v, err)
		}
	}
	// Default schema: Spock is required.
	sp, err := install.New(conn, "", render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Install(ctx); err == nil || !strings.Contains(err.Error(), "the spock extension is not installed") {
		t.Errorf("install into spock without Spock: %v", err)
	}
	// Nothing was left behind by the refusals.
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relname LIKE 'zodan%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("refused installs left %d zodan relations", n)
	}
}
