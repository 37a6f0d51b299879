package install_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// A failed add_node on plain PostgreSQL: the source has no Spock, so the
// checks phase fails after the cluster lock was taken and the journal
// record opened. Whatever else goes wrong on the way out, the CALL must
// leave no zodan connection in the DBA's session, and so no cluster lock.
func TestFailedAddNodeLeavesNoLockBehind(t *testing.T) {
	cases := []struct {
		name string
		// setup runs on the new node's database before the CALL.
		setup     []string
		session   []string
		wantCode  string
		wantMsg   string
		wantState string
	}{
		{
			name:      "checks fail",
			wantCode:  "ZDC01",
			wantMsg:   "add_node n4 failed in phase 1/10 checks: add_node cannot start: spock-version: Spock is not installed on n1",
			wantState: "failed",
		},
		{
			// Timestamps written into the journal must not depend on how
			// either session prints or parses dates.
			name:      "DateStyle SQL, DMY everywhere",
			setup:     []string{"ALTER DATABASE %[1]s SET DateStyle = 'SQL, DMY'", "ALTER DATABASE %[1]s SET IntervalStyle = 'sql_standard'"},
			session:   []string{"SET DateStyle = 'SQL, DMY'", "SET IntervalStyle = 'sql_standard'"},
			wantCode:  "ZDC01",
			wantMsg:   "add_node n4 failed in phase 1/10 checks: add_node cannot start: spock-version",
			wantState: "failed",
		},
		{
			// The journal insert is the first thing after the lock.
			name: "journal insert fails",
			setup: []string{`CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'journal is read-only today' USING ERRCODE = 'read_only_sql_transaction'; END $$`,
				"CREATE TRIGGER refuse BEFORE INSERT ON zodan_ci.zodan_operation FOR EACH ROW EXECUTE FUNCTION public.refuse()"},
			wantCode: "25006",
			wantMsg:  "add_node n4 failed while starting: on node n4: journal is read-only today",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, db, _ := installedDB(t, render.Options{})
			src := c.Database(t)
			for _, s := range tc.setup {
				c.Exec(t, db, strings.ReplaceAll(s, "%[1]s", db))
			}
			conn := c.Connect(t, db) // a session that has the database's settings
			for _, s := range tc.session {
				if _, err := conn.Exec(ctxT(t), s); err != nil {
					t.Fatal(err)
				}
			}
			_, err := conn.Exec(ctxT(t), `CALL zodan_ci.add_node('n1', $1, 'n4', $2)`, c.DSN(src), c.DSN(db))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("add_node: want an error, got %v", err)
			}
			if pgErr.Code != tc.wantCode || !strings.HasPrefix(pgErr.Message, tc.wantMsg) {
				t.Errorf("add_node failed with %s %q, want %s %q...", pgErr.Code, pgErr.Message, tc.wantCode, tc.wantMsg)
			}
			assertNoZodanConnections(t, c, db, conn)
			if tc.wantState != "" {
				var state, phases string
				if err := conn.QueryRow(ctxT(t), `SELECT state, phase_durations FROM zodan_ci.zodan_operations`).Scan(&state, &phases); err != nil {
					t.Fatal(err)
				}
				if state != tc.wantState || !strings.HasPrefix(phases, "checks ") || !strings.HasSuffix(phases, " failed") {
					t.Errorf("journal says %s, %q; want %s, checks failed", state, phases, tc.wantState)
				}
			}
		})
	}
}

// Ctrl-C pressed again and again while add_node rolls back: the rollback
// starts over (up to three times), the outcome is still journaled, and the
// connections, with the cluster lock, are closed.
func TestRepeatedCancelsDuringRollbackLeaveNoLockBehind(t *testing.T) {
	c, db, _ := installedDB(t, render.Options{})
	src := c.Database(t)
	cfg, err := pgx.ParseConfig(c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	var notices []string
	var mu sync.Mutex
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n.Severity+": "+n.Message)
	}
	conn, err := pgx.ConnectConfig(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	defer func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("notices:\n%s", strings.Join(notices, "\n"))
		}
	}()
	// Marking the failed phase is slow, every time the rollback tries: every
	// cancel lands in the rollback.
	c.Exec(t, db, `CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`)
	c.Exec(t, db, "CREATE TRIGGER slow BEFORE UPDATE ON zodan_ci.zodan_operation_phase FOR EACH STATEMENT EXECUTE FUNCTION public.slow()")
	var pid uint32
	if err := conn.QueryRow(ctxT(t), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), `CALL zodan_ci.add_node('n1', $1, 'n4', $2)`, c.DSN(src), c.DSN(db))
		done <- err
	}()
	watcher := c.Connect(t, db)
	cancels := 0
wait:
	for {
		select {
		case err = <-done:
			break wait
		default:
		}
		// Cancel once per slow journal write: whenever the journal
		// connection sits in the slow trigger, then not again until that
		// sleep is over.
		var sleeper int32
		var since time.Time
		err := watcher.QueryRow(ctxT(t), `SELECT pid, state_change FROM pg_stat_activity
			WHERE datname = current_database() AND application_name LIKE 'zodan add_node n4 (op %' AND wait_event = 'PgSleep'`).Scan(&sleeper, &since)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := watcher.Exec(ctxT(t), "SELECT pg_cancel_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		cancels++
		if err := pollUntil(t, func() (bool, error) {
			var still bool
			err := watcher.QueryRow(ctxT(t), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE pid = $1 AND state_change = $2 AND wait_event = 'PgSleep')`, sleeper, since).Scan(&still)
			return !still, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if cancels < 3 {
		t.Fatalf("only %d cancels landed in the rollback; the test needs at least 3", cancels)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" ||
		!strings.HasPrefix(pgErr.Message, "add_node n4 failed in phase 1/10 checks: canceling statement due to user request") {
		t.Fatalf("after %d cancels add_node returned %v; want 57014, naming phase checks", cancels, err)
	}
	assertNoZodanConnections(t, c, db, conn)
	var state, row string
	if err := watcher.QueryRow(ctxT(t), `SELECT state, o::text FROM zodan_ci.zodan_operations o`).Scan(&state, &row); err != nil {
		t.Fatal(err)
	}
	if state != "cancelled" {
		t.Errorf("journal says %s after the cancelled rollback, want cancelled: %s", state, row)
	}
	t.Logf("%d cancels landed during the rollback", cancels)
}

// assertNoZodanConnections fails when the DBA's session (conn) still has a
// zodan dblink connection, or when anyone holds the cluster lock.
func assertNoZodanConnections(t *testing.T, c *pgtest.Cluster, db string, conn *pgx.Conn) {
	t.Helper()
	var open []string
	if err := conn.QueryRow(ctxT(t), "SELECT coalesce(public.dblink_get_connections(), '{}')").Scan(&open); err != nil {
		t.Fatal(err)
	}
	if len(open) > 0 {
		t.Errorf("the session still has dblink connections %v after the CALL", open)
	}
	// A connection closed while its statement ran (a cancel left it busy)
	// ends once that statement returns: the lock goes with it.
	other := c.Connect(t, db)
	var holders int
	if err := pollUntil(t, func() (bool, error) {
		err := other.QueryRow(ctxT(t), `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2`,
			render.LockKey1, render.LockKey2).Scan(&holders)
		return holders == 0, err
	}); err != nil {
		t.Errorf("%d session(s) still hold the cluster lock a minute after the CALL: %v", holders, err)
	}
}

// pollUntil polls cond until it holds, for at most a minute.
func pollUntil(t *testing.T, cond func() (bool, error)) error {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("condition not reached within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
