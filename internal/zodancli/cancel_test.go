package zodancli

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/pgtest"
)

// sleepingStub is an add_node that announces its first phase, then
// sleeps far longer than any test waits.
const sleepingStub = `
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 1/10 checks: cluster of %s', new_node_name, src_node_name), ERRCODE = 'ZD001';
    PERFORM pg_sleep(600);`

// callBackends lists the server processes running zodan's CALL in db;
// with sleeping, only those already in the stub's pg_sleep, which have
// sent their first NOTICE. (A backend shows its query before the
// procedure starts, and cancelling it then would leave no phase behind.)
func callBackends(t *testing.T, c *pgtest.Cluster, db string, sleeping bool) []int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := c.Connect(t, "postgres").Query(ctx, `
		SELECT pid FROM pg_stat_activity
		 WHERE datname = $1 AND application_name = 'zodan' AND query LIKE 'CALL zs.add_node(%'
		   AND (NOT $2 OR wait_event = 'PgSleep')`, db, sleeping)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// startSleepingAddNode prepares a database whose add_node sleeps and
// returns the command line that calls it.
func startSleepingAddNode(t *testing.T, c *pgtest.Cluster) (db string, args []string) {
	db = c.Database(t)
	stubProcedure(t, c, db, "zs", "add_node", sleepingStub)
	return db, []string{"add-node", "--schema", "zs", "--no-install",
		"--src-node-name", "n1", "--src-dsn", c.DSN(db), "--new-node-name", "n2", "--new-node-dsn", c.DSN(db)}
}

// checkCancelled waits for the backend to leave and checks that zodan
// exited with 130 and the server's confirmation of the cancel.
func checkCancelled(t *testing.T, c *pgtest.Cluster, db string, done <-chan ran) {
	t.Helper()
	eventually(t, 5*time.Second, "the CALL's backend leaves pg_stat_activity", func() bool {
		return len(callBackends(t, c, db, false)) == 0
	})
	var r ran
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("zodan did not return after its CALL was cancelled")
	}
	if r.code != exitCancelled {
		t.Fatalf("want exit code 130\n%s", r)
	}
	// 57014 comes from the server: the cancel request reached it, rather
	// than zodan merely dropping the connection.
	for _, want := range []string{"(SQLSTATE 57014)", "rolls the join back", "SELECT * FROM zs.zodan_operations on 127.0.0.1:"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q\n%s", want, r)
		}
	}
	if !strings.Contains(r.stdout, "1/10 checks") || !strings.Contains(r.stdout, "cancelled") {
		t.Errorf("the summary does not show the phase as cancelled\n%s", r)
	}
}

func TestCancellingTheContextStopsTheCallOnTheServer(t *testing.T) {
	c := pgtest.Shared(t)
	db, args := startSleepingAddNode(t, c)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan ran, 1)
	go func() { done <- zodanContext(ctx, args...) }()
	eventually(t, 30*time.Second, "the CALL runs on the server", func() bool { return len(callBackends(t, c, db, true)) == 1 })

	cancel()
	checkCancelled(t, c, db, done)
}

// Main turns SIGINT and SIGTERM into the same cancellation. The signal
// goes to the whole test process; no other test runs meanwhile.
func TestSignalsCancelTheCall(t *testing.T) {
	c := pgtest.Shared(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			db, args := startSleepingAddNode(t, c)
			done := make(chan ran, 1)
			go func() {
				var stdout, stderr lockedBuffer
				code := Main(append([]string{"zodan"}, args...), &stdout, &stderr)
				done <- ran{code: code, stdout: stdout.String(), stderr: stderr.String()}
			}()
			// Main listens for signals before it connects, so once the CALL
			// runs the signal cannot kill the test binary.
			eventually(t, 30*time.Second, "the CALL runs on the server", func() bool { return len(callBackends(t, c, db, true)) == 1 })

			if err := syscall.Kill(syscall.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			checkCancelled(t, c, db, done)
		})
	}
}
