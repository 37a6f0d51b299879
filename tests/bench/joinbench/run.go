package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/spocktest"
)

// config is one cell of the matrix.
type config struct {
	Rows  int64  `json:"rows"`
	Nodes int    `json:"nodes"` // cluster size before the join
	Load  string `json:"load"`  // "none" or "steady"
}

func (c config) String() string {
	return fmt.Sprintf("rows=%s nodes=%d load=%s", human(c.Rows), c.Nodes, c.Load)
}

// phase is one row of the journal's phases column, with its bounds
// relative to the start of the CALL.
type phase struct {
	No       int       `json:"phase_no"`
	Name     string    `json:"phase"`
	Started  time.Time `json:"started_at"`
	Finished time.Time `json:"finished_at"`
	Outcome  string    `json:"outcome"`
	Seconds  float64   `json:"seconds"`
	From     float64   `json:"from_s"` // relative to the CALL's start
	To       float64   `json:"to_s"`
	// What the source's writer did while the phase ran (with load).
	Source *window `json:"source,omitempty"`
}

// notice is a message add_node sent, with when it arrived.
type notice struct {
	At  float64 `json:"at_s"` // relative to the CALL's start
	Msg string  `json:"msg"`
}

// runResult is what one run measured.
type runResult struct {
	Run       int      `json:"run"`
	Error     string   `json:"error,omitempty"`
	AddNodeS  float64  `json:"add_node_s"`
	Phases    []phase  `json:"phases"`
	RefS      float64  `json:"pg_dump_psql_s"`
	RefBytes  int64    `json:"pg_dump_bytes"`
	Identical bool     `json:"identical"`
	Problems  []string `json:"problems,omitempty"` // why not identical
	Notices   []notice `json:"notices,omitempty"`
	// With load: all writers, and the source's writer alone.
	Before       *window `json:"before,omitempty"`
	During       *window `json:"during,omitempty"`
	SourceBefore *window `json:"source_before,omitempty"`
	SourceDuring *window `json:"source_during,omitempty"`
	// The source's writer while pg_dump|psql copied the same data (with
	// load the reference runs under it too): the physical copy's own
	// cost to the application on this machine.
	SourceRef      *window  `json:"source_during_pg_dump,omitempty"`
	SourceTimeline []second `json:"source_timeline,omitempty"`
	AllTimeline    []second `json:"all_timeline,omitempty"`
	Committed      int64    `json:"committed,omitempty"`
	WriterErrors   []string `json:"writer_errors,omitempty"`
	// Subscriptions of the cluster restarted while it was built (a Spock
	// worker race, see buildCluster), before the join.
	SubRestarts []string `json:"sub_restarts,omitempty"`
	Versions    versions `json:"-"`
	SetupS      float64  `json:"setup_s"`
	ConvergeS   float64  `json:"converge_s"`
}

// settings are the knobs of every run.
type settings struct {
	binDir string
	rate   int           // transactions per second per writer
	steady time.Duration // steady-state window before the join
	tail   time.Duration // writers keep going this long after it
	limit  time.Duration // bound on each wait
	logf   func(format string, a ...any)
	// server holds postgresql.conf settings of every node (-set).
	server map[string]string
	// keepLogs, when set, is where each run's server logs are copied.
	keepLogs string
}

// runOnce builds a fresh cluster of c.Nodes nodes holding c.Rows
// accounts, times pg_dump|psql of them, runs add_node of one more node
// (under load if asked), checks the result, and tears everything down.
func runOnce(ctx context.Context, s settings, c config, run int) (res runResult) {
	res.Run = run
	setup := time.Now()
	names := make([]string, c.Nodes+1)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
	}
	all, err := spocktest.StartNodesWith(ctx, s.binDir, spocktest.NodeOptions{Settings: s.server}, names...)
	if err != nil {
		res.Error = "starting nodes: " + err.Error()
		return res
	}
	defer func() {
		for _, n := range all {
			if s.keepLogs != "" {
				keepLog(s, c, run, n)
			}
			n.Cluster.Destroy()
		}
	}()
	existing, joiner := all[:c.Nodes], all[c.Nodes]
	src := existing[0]
	fail := func(what string, err error) runResult {
		res.Error = what + ": " + dbconn.Describe(err)
		return res
	}

	if err := buildCluster(ctx, existing, c.Rows, s.limit, s.logf, &res.SubRestarts); err != nil {
		return fail("building the cluster", err)
	}
	res.SetupS = time.Since(setup).Seconds()
	if res.Versions, err = probeVersions(ctx, src); err != nil {
		return fail("reading versions", err)
	}

	var ws *writers
	var beforeFrom, beforeTo time.Time
	if c.Load == "steady" {
		if ws, err = startWriters(ctx, existing, c.Rows, s.rate); err != nil {
			return fail("starting the writers", err)
		}
		defer ws.halt()
		// A second to connect and settle, then the steady-state window.
		beforeFrom = ws.t0.Add(time.Second)
		beforeTo = beforeFrom.Add(s.steady)
		if err := wait(ctx, beforeTo); err != nil {
			return fail("steady state", err)
		}
	}
	// The reference copy, under the same load as the join: what moving
	// these rows costs the writers on this machine whoever does it.
	refFrom := time.Now()
	res.RefS, res.RefBytes, err = dumpRestore(ctx, s.binDir, src, joiner)
	if err != nil {
		return fail("pg_dump | psql", err)
	}
	refTo := time.Now()

	// The join, as a DBA runs it: CALL spock.add_node on the new node.
	var mu sync.Mutex
	var start time.Time
	conn, err := dbconn.Connect(ctx, joiner.DSN(), dbconn.Options{ApplicationName: "joinbench", CancelGrace: 10 * time.Minute,
		OnNotice: func(n *pgconn.Notice) {
			mu.Lock()
			res.Notices = append(res.Notices, notice{At: time.Since(start).Seconds(), Msg: n.Message})
			mu.Unlock()
		}})
	if err != nil {
		return fail("connecting to the new node", err)
	}
	s.logf("    setup %.1f s, pg_dump | psql %.2f s (%s); CALL spock.add_node on %s", res.SetupS, res.RefS, bytesHuman(res.RefBytes), joiner.Name)
	start = time.Now()
	_, callErr := conn.Exec(ctx, `CALL spock.add_node(src_node_name => $1, src_dsn => $2, new_node_name => $3, new_node_dsn => $4, verb => true)`,
		src.Name, src.DSN(), joiner.Name, joiner.DSN())
	end := time.Now()
	conn.Close(context.WithoutCancel(ctx))
	res.AddNodeS = end.Sub(start).Seconds()
	s.logf("    add_node %s: %.2f s", joiner.Name, res.AddNodeS)

	if ws != nil {
		// The writers keep going a little after the join, so that the
		// timeline shows how they recover.
		if err := wait(ctx, end.Add(s.tail)); err != nil {
			return fail("after the join", err)
		}
		ws.halt()
		txAll, txSrc := ws.snapshot()
		bw, dw := ws.measure(start, beforeFrom, beforeTo), ws.measure(start, start, end)
		sbw, sdw := measure(txSrc, start, beforeFrom, beforeTo), measure(txSrc, start, start, end)
		sref := measure(txSrc, refFrom, refFrom, refTo)
		res.Before, res.During, res.SourceBefore, res.SourceDuring, res.SourceRef = &bw, &dw, &sbw, &sdw, &sref
		// Whole seconds only: from the steady-state window's first to
		// the last one before the writers stopped.
		from := int(math.Ceil(beforeFrom.Sub(start).Seconds()))
		to := int(math.Floor(end.Add(s.tail).Sub(start).Seconds())) - 1
		res.SourceTimeline = timeline(txSrc, start, from, to)
		res.AllTimeline = timeline(txAll, start, from, to)
		for _, w := range ws.all {
			res.Committed += w.committed
			res.WriterErrors = append(res.WriterErrors, w.errs...)
		}
	}
	if phases, err := journalPhases(ctx, joiner, start); err != nil {
		res.Problems = append(res.Problems, "reading the journal: "+err.Error())
	} else {
		res.Phases = phases
	}
	if ws != nil {
		_, txSrc := ws.snapshot()
		res.Phases = sourcePhases(res.Phases, txSrc, start)
	}
	if callErr != nil {
		res.Error = "add_node: " + dbconn.Describe(callErr)
		return res
	}

	converge := time.Now()
	res.Problems = append(res.Problems, check(ctx, all, ws, s.limit)...)
	res.ConvergeS = time.Since(converge).Seconds()
	res.Identical = len(res.Problems) == 0
	return res
}

// wait returns at t, or when ctx ends: a measurement window, not a
// synchronisation.
func wait(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// The schema: pgbench's accounts and history, as pgbench -i creates them
// (fillfactor 100, the key added after the load).
const schema = `
CREATE TABLE pgbench_accounts (aid integer NOT NULL, bid integer, abalance integer, filler character(84)) WITH (fillfactor = 100);
CREATE TABLE pgbench_history (tid integer, bid integer, aid integer, delta integer, mtime timestamp, filler character(22));`

// buildCluster loads the same accounts into each node, independently and
// in parallel, before the nodes know each other, then makes them a mesh
// as a DBA would (node_create, the tables into the default replication
// sets, a subscription between every pair, without an initial sync). This
// is much faster than replicating millions of rows through Spock's apply,
// and ends in the state such a replication would leave: identical tables,
// replicated both ways from then on.
func buildCluster(ctx context.Context, nodes []*spocktest.Node, rows int64, limit time.Duration,
	logf func(string, ...any), restarts *[]string) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = loadAccounts(ctx, n, rows)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := n.Register(ctx); err != nil {
			return err
		}
		// A table without a key can only be in a set that replicates
		// inserts alone, as AutoDDL would have put it.
		if err := n.Exec(ctx, spocktest.Database, `SELECT spock.repset_add_table('default', 'pgbench_accounts');
		    SELECT spock.repset_add_table('default_insert_only', 'pgbench_history')`); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		for _, p := range nodes {
			if n != p {
				if err := n.Subscribe(ctx, p); err != nil {
					return err
				}
			}
		}
	}
	c := spocktest.Cluster{Nodes: nodes}
	err := c.WaitReplicating(ctx, 30*time.Second)
	// Spock 5.0.11 now and then starts two apply workers for a
	// subscription created just after its node. The manager loses track
	// of the first and keeps relaunching a second, which fails for ever
	// ("replication origin with ID 1 is already active for PID ...")
	// while sub_show_status says down. WaitReplicating already counts
	// such a subscription as replicating while the lost worker streams
	// (spocktest.NotReplicating); one still down here has no worker
	// streaming. Ending its apply workers lets the manager's next launch
	// take over. The run records it.
	for attempt := 1; err != nil && ctx.Err() == nil && attempt <= 3; attempt++ {
		for _, n := range nodes {
			down, qerr := spocktest.QueryValue[[]string](ctx, n, `SELECT coalesce(array_agg(subscription_name::text), '{}')
			    FROM spock.sub_show_status() WHERE status <> 'replicating'`)
			if qerr != nil {
				return qerr
			}
			for _, sub := range down {
				ended, qerr := spocktest.QueryValue[int64](ctx, n, `SELECT count(pg_terminate_backend(a.pid))
				    FROM pg_stat_activity a JOIN spock.subscription s ON s.sub_name = $1
				   WHERE a.backend_type = format('spock apply %s:%s',
				             (SELECT oid FROM pg_database WHERE datname = current_database()), s.sub_id)`, sub)
				if qerr != nil {
					return qerr
				}
				logf("    %s: subscription %s is not replicating; ended its %d apply worker(s) for Spock to start afresh (a Spock worker race, not the join)",
					n.Name, sub, ended)
				*restarts = append(*restarts, n.Name+": "+sub)
			}
		}
		err = c.WaitReplicating(ctx, min(limit, 2*time.Minute))
	}
	return err
}

// loadAccounts creates and fills the tables on one node, with AutoDDL off
// (every node loads its own copy).
func loadAccounts(ctx context.Context, n *spocktest.Node, rows int64) error {
	c, err := n.Connect(ctx, spocktest.Database)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, q := range []string{
		`SET spock.enable_ddl_replication = off`,
		schema,
		`INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
		   SELECT aid, (aid - 1) / 100000 + 1, 0, '' FROM generate_series(1, $1::bigint) aid`,
		`ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)`,
		`VACUUM (ANALYZE) pgbench_accounts`,
	} {
		var err error
		if strings.Contains(q, "$1") {
			_, err = c.Exec(ctx, q, rows)
		} else {
			_, err = c.Exec(ctx, q)
		}
		if err != nil {
			return fmt.Errorf("loading %d accounts on %s: %w", rows, n.Name, err)
		}
	}
	return nil
}

// dumpRestore is the physical reference: pg_dump of the accounts table on
// from, piped into psql on a fresh plain database of to (same machine),
// timed from the start of both to the end of both. The database is dropped
// again before the join.
func dumpRestore(ctx context.Context, binDir string, from, to *spocktest.Node) (secs float64, bytes int64, err error) {
	if err := to.Exec(ctx, "postgres", `CREATE DATABASE dumpref`); err != nil {
		return 0, 0, err
	}
	dump := exec.CommandContext(ctx, filepath.Join(binDir, "pg_dump"), "--no-owner", "--no-privileges",
		"-t", "public.pgbench_accounts", "-d", from.DSN())
	restore := exec.CommandContext(ctx, filepath.Join(binDir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-d", to.Cluster.DSN("dumpref"))
	pipe, err := dump.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	counted := &countingReader{r: pipe}
	restore.Stdin = counted
	var dumpErr, restoreErr strings.Builder
	dump.Stderr, restore.Stderr = &dumpErr, &restoreErr
	var out strings.Builder
	restore.Stdout = &out
	start := time.Now()
	if err := dump.Start(); err != nil {
		return 0, 0, err
	}
	if err := restore.Start(); err != nil {
		_ = dump.Process.Kill()
		_ = dump.Wait()
		return 0, 0, err
	}
	restoreWait := restore.Wait()
	dumpWait := dump.Wait()
	secs = time.Since(start).Seconds()
	if dumpWait != nil {
		return 0, 0, fmt.Errorf("pg_dump: %w: %s", dumpWait, dumpErr.String())
	}
	if restoreWait != nil {
		return 0, 0, fmt.Errorf("psql: %w: %s", restoreWait, restoreErr.String())
	}
	if restoreErr.Len() > 0 {
		return 0, 0, fmt.Errorf("psql: %s", restoreErr.String())
	}
	var copied int64
	cc, err := to.Connect(ctx, "dumpref")
	if err != nil {
		return 0, 0, err
	}
	err = cc.QueryRow(ctx, `SELECT count(*) FROM pgbench_accounts`).Scan(&copied)
	cc.Close(ctx)
	if err != nil {
		return 0, 0, err
	}
	want, err := spocktest.QueryValue[int64](ctx, from, `SELECT count(*) FROM pgbench_accounts`)
	if err != nil {
		return 0, 0, err
	}
	if copied != want {
		return 0, 0, fmt.Errorf("pg_dump | psql copied %d rows of %d", copied, want)
	}
	if err := to.Exec(ctx, "postgres", `DROP DATABASE dumpref`); err != nil {
		return 0, 0, err
	}
	return secs, counted.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// journalPhases reads the phases of the latest operation from the
// journal on the node that ran it.
func journalPhases(ctx context.Context, n *spocktest.Node, start time.Time) ([]phase, error) {
	raw, err := spocktest.QueryValue[string](ctx, n,
		`SELECT coalesce(phases, '[]')::text FROM spock.zodan_operations ORDER BY op_id DESC LIMIT 1`)
	if err != nil {
		return nil, err
	}
	var ps []phase
	if err := json.Unmarshal([]byte(raw), &ps); err != nil {
		return nil, fmt.Errorf("journal phases %s: %w", raw, err)
	}
	for i := range ps {
		ps[i].From = ps[i].Started.Sub(start).Seconds()
		if !ps[i].Finished.IsZero() {
			ps[i].To = ps[i].Finished.Sub(start).Seconds()
		}
	}
	return ps, nil
}

// sourcePhases adds to each phase what the source's writer did during it.
func sourcePhases(ps []phase, txns []txn, start time.Time) []phase {
	for i := range ps {
		if ps[i].Finished.IsZero() {
			continue
		}
		w := measure(txns, start, ps[i].Started, ps[i].Finished)
		ps[i].Source = &w
	}
	return ps
}

// check waits until every node has applied every other node's changes,
// then compares: every table identical on every node (row count and a
// hash of every row), no entry in any spock.exception_log, and (with
// load) exactly the history rows each writer committed, on every node.
func check(ctx context.Context, nodes []*spocktest.Node, ws *writers, limit time.Duration) []string {
	var problems []string
	if err := spocktest.SyncAll(ctx, nodes, limit); err != nil {
		return []string{"convergence: " + err.Error()}
	}
	if _, err := spocktest.SameFingerprints(ctx, nodes); err != nil {
		problems = append(problems, err.Error())
	}
	for _, n := range nodes {
		got, err := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM spock.exception_log`)
		if err != nil {
			problems = append(problems, err.Error())
		} else if got > 0 {
			problems = append(problems, fmt.Sprintf("%s has %d entries in spock.exception_log", n.Name, got))
		}
	}
	if ws == nil {
		return problems
	}
	for _, w := range ws.all {
		for _, n := range nodes {
			got, err := spocktest.QueryValue[int64](ctx, n, `SELECT count(*) FROM pgbench_history WHERE tid = $1`, w.idx)
			if err != nil {
				problems = append(problems, err.Error())
			} else if got != w.committed {
				problems = append(problems, fmt.Sprintf("%s has %d history rows of %s's writer, which committed %d",
					n.Name, got, w.node.Name, w.committed))
			}
		}
	}
	slices.Sort(problems)
	return problems
}

// keepLog copies node n's server log of this run into s.keepLogs, named
// after the configuration, the run and the node.
func keepLog(s settings, c config, run int, n *spocktest.Node) {
	data, err := os.ReadFile(n.Cluster.LogFile)
	if err == nil {
		name := fmt.Sprintf("%s-%dn-%s-run%d-%s.log", human(c.Rows), c.Nodes, c.Load, run, n.Name)
		err = os.WriteFile(filepath.Join(s.keepLogs, name), data, 0o644)
	}
	if err != nil {
		s.logf("    keeping the server log of %s: %v", n.Name, err)
	}
}
