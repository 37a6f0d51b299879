// Command demo shows a DBA what zodan does, on one machine: a local
// three-node Spock cluster takes writes on every node while a fourth node
// joins it with CALL spock.add_node; the phases print as they happen, and
// at the end every node is checked to hold the same rows. It needs
// ZODAN_SPOCK_BINDIR and cleans up after itself (also on Ctrl-C).
//
//	ZODAN_SPOCK_BINDIR=/opt/pgspock/bin make demo
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/spocktest"
)

func main() { os.Exit(run()) }

func run() int {
	dir, ok, err := spocktest.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	if !ok {
		fmt.Fprintln(os.Stderr, "demo needs Spock: "+spocktest.SkipMessage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}

	say("starting a 3-node Spock cluster n1, n2, n3 (PostgreSQL from %s)", dir)
	c, err := spocktest.NewMesh(ctx, dir, "n1", "n2", "n3")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer c.Destroy()
	say("starting n4, an empty database with Spock and zodan installed")
	fresh, err := spocktest.StartNodes(ctx, dir, "n4")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	n4 := fresh[0]
	defer n4.Cluster.Destroy()

	if err := spocktest.CreateLoadTable(ctx, c.Nodes); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	if err := c.Get("n1").Exec(ctx, spocktest.Database,
		`INSERT INTO load_rows (origin, seq) SELECT 'n1', g FROM generate_series(1, 50000) g`); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	say("n1 has 50000 rows; a write load starts on n1, n2 and n3 (20 inserts/s each, updates on n1)")
	load, err := spocktest.StartLoad(ctx, c.Nodes, "n1", 20)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}

	say("on n4: CALL spock.add_node('n1', <n1's DSN>, 'n4', <n4's DSN>)")
	conn, err := dbconn.Connect(ctx, n4.DSN(), dbconn.Options{ApplicationName: "zodan demo", CancelGrace: 10 * time.Minute,
		OnNotice: func(n *pgconn.Notice) { say("%s: %s", n.Severity, n.Message) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	_, err = conn.Exec(ctx, `CALL spock.add_node($1, $2, $3, $4)`, "n1", c.Get("n1").DSN(), "n4", n4.DSN())
	conn.Close(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: add_node failed:", dbconn.Describe(err))
		load.Stop()
		return 1
	}

	say("n4 takes writes too for a few seconds")
	load4, err := spocktest.StartLoad(ctx, []*spocktest.Node{n4}, "", 20)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	res, res4 := load.Stop(), load4.Stop()
	total := res.Total() + res4.Total()
	committed := res.Committed
	committed["n4"] = res4.Committed["n4"]
	errs := len(res.AllErrors()) + len(res4.AllErrors())
	say("load stopped: %d rows committed %v, %d updates, %d client errors, slowest statement %s",
		total, committed, res.Updates, errs, max(res.LongestStmt, res4.LongestStmt).Round(time.Millisecond))

	all := append(c.Nodes, n4)
	if err := spocktest.Converged(ctx, all, committed, 3*time.Minute); err != nil {
		fmt.Fprintln(os.Stderr, "demo: the nodes differ:", err)
		return 1
	}
	for _, n := range all {
		count, _ := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM load_rows`)
		sum, _ := spocktest.QueryValue[string](ctx, n, `SELECT md5(string_agg(origin || ':' || seq || ':' || v, ',' ORDER BY origin, seq)) FROM load_rows`)
		say("%s: %d rows, checksum %s", n.Name, count, sum)
	}
	say("all four nodes hold exactly the rows every node committed; cleaning up")
	if errs > 0 {
		return 1
	}
	return 0
}
