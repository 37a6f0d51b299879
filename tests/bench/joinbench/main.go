// Command joinbench measures add_node on one machine, against real Spock
// (ZODAN_SPOCK_BINDIR, as the end-to-end tests): a matrix of rows to copy
// (pgbench_accounts), cluster sizes before the join, and with or without a
// steady write load on every node. Each cell is run several times on a
// fresh cluster; it prints one markdown table of medians (add_node's wall
// time and per-phase split from the journal, a pg_dump | psql of the same
// data between two nodes as the physical reference, the writers'
// throughput and worst per-second latency before and during the join,
// whether every node ended identical), and writes the same as JSON and a
// small SVG plot.
//
//	make bench-join BENCH_SIZES=0,100000 BENCH_NODES=1,3 BENCH_RUNS=1
//	ZODAN_SPOCK_BINDIR=... go run ./tests/bench/joinbench -h
//
// How a run goes: start the nodes of the cluster and the new node; load
// the accounts into every node of the cluster, each its own identical
// copy, before they know each other, then connect them into a mesh
// (replicating them through Spock would take minutes per million rows and
// ends in the same state); time pg_dump | psql of the accounts from n1
// into a fresh database on the new node; start a writer per node (with
// load); after a steady-state window, CALL spock.add_node on the new node
// with n1 as the source; read the phases from spock.zodan_operations; stop
// the writers; wait until every node has applied every other's changes
// (sync events, polled); compare every table on every node; check
// spock.exception_log; tear everything down.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zodan-project/zodan/internal/spocktest"
)

func main() { os.Exit(run()) }

func run() int {
	sizesFlag := flag.String("sizes", "0,1000000,5000000", "rows of pgbench_accounts to copy, comma-separated (k and M suffixes work: 100k, 10M)")
	nodesFlag := flag.String("nodes", "1,3,5", "cluster sizes before the join, comma-separated")
	loadFlag := flag.String("load", "none,steady", "load modes, comma-separated: none, steady (a writer per node during the join)")
	runs := flag.Int("runs", 3, "runs per configuration; the table shows medians (at least 3 for figures worth quoting)")
	rate := flag.Int("rate", 50, "transactions per second of each writer (load steady)")
	steady := flag.Duration("steady", 10*time.Second, "steady-state window of the writers before the join")
	tail := flag.Duration("tail", 3*time.Second, "how long the writers go on after the join")
	out := flag.String("out", "bench-results", "directory for join.json, join.svg, join.md and timelines (made git-ignored)")
	timelineFlag := flag.String("timeline", "", `print the source writer's per-second latency timeline with phase boundaries for the first run of: "all" loaded configurations, or ROWS/NODES (e.g. 100k/3)`)
	limit := flag.Duration("wait-limit", 15*time.Minute, "bound on each wait (cluster start, convergence)")
	serverSettings := map[string]string{}
	flag.Func("set", "a postgresql.conf setting of every node, name=value (repeatable), e.g. -set log_min_duration_statement=20ms to see what the writers wait for", func(v string) error {
		name, value, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("want name=value, not %q", v)
		}
		serverSettings[strings.TrimSpace(name)] = value
		return nil
	})
	keepLogs := flag.String("keep-logs", "", "directory to copy every node's server log into, one file per run and node, before the run's nodes are removed")
	flag.Parse()

	sizes, err := parseList(*sizesFlag, parseRows)
	if err != nil {
		return usage("-sizes: %v", err)
	}
	nodeCounts, err := parseList(*nodesFlag, strconv.Atoi)
	if err != nil {
		return usage("-nodes: %v", err)
	}
	loads, err := parseList(*loadFlag, func(s string) (string, error) {
		if s != "none" && s != "steady" {
			return "", fmt.Errorf("%q is neither none nor steady", s)
		}
		return s, nil
	})
	if err != nil {
		return usage("-load: %v", err)
	}
	for _, n := range nodeCounts {
		if n < 1 {
			return usage("-nodes: a cluster has at least 1 node, not %d", n)
		}
	}
	if *runs < 1 || *rate < 1 {
		return usage("-runs and -rate must be at least 1")
	}
	var tlRows int64
	var tlNodes int
	if *timelineFlag != "" && *timelineFlag != "all" {
		r, n, ok := strings.Cut(*timelineFlag, "/")
		if !ok {
			return usage("-timeline: all or ROWS/NODES, not %q", *timelineFlag)
		}
		if tlRows, err = parseRows(r); err != nil {
			return usage("-timeline: %v", err)
		}
		if tlNodes, err = strconv.Atoi(n); err != nil {
			return usage("-timeline: %v", err)
		}
	}

	binDir, ok, err := spocktest.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "joinbench:", err)
		return 2
	}
	if !ok {
		fmt.Fprintln(os.Stderr, "joinbench needs Spock: "+spocktest.SkipMessage+" (make bench-join does)")
		return 2
	}
	if err := prepareOut(*out); err != nil {
		fmt.Fprintln(os.Stderr, "joinbench:", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
	}
	s := settings{binDir: binDir, rate: *rate, steady: *steady, tail: *tail, limit: *limit, logf: logf,
		server: serverSettings, keepLogs: *keepLogs}
	if *keepLogs != "" {
		if err := os.MkdirAll(*keepLogs, 0o755); err != nil {
			return usage("-keep-logs: %v", err)
		}
	}
	rep := report{
		Machine: probeMachine(),
		Started: began.UTC().Format(time.RFC3339),
		Settings: map[string]any{
			"sizes": sizes, "nodes": nodeCounts, "load": loads, "runs": *runs, "rate_per_writer": *rate,
			"steady_s": steady.Seconds(), "tail_s": tail.Seconds(), "bindir": binDir, "server_settings": serverSettings,
			"data": "pgbench_accounts loaded identically on every node before the mesh is made; n1 is the source",
		},
	}
	logf("joinbench: %s; sizes %v, nodes %v, load %v, %d runs each", rep.Machine, sizes, nodeCounts, loads, *runs)
	if rep.Machine.LoadAvg1 > float64(rep.Machine.Cores)/2 {
		logf("joinbench: the machine is busy (load average %s on %d cores): figures will be noisy", rep.Machine.LoadAvg, rep.Machine.Cores)
	}

	failed := false
	for _, rows := range sizes {
		for _, nodes := range nodeCounts {
			for _, load := range loads {
				c := config{Rows: rows, Nodes: nodes, Load: load}
				res := result{config: c}
				for i := 1; i <= *runs; i++ {
					logf("%s: run %d/%d", c, i, *runs)
					r := runOnce(ctx, s, c, i)
					if ctx.Err() != nil {
						logf("interrupted")
						return 130
					}
					if r.Versions.PostgreSQL != "" && rep.Versions.PostgreSQL == "" {
						rep.Versions = r.Versions
					}
					switch {
					case r.Error != "":
						failed = true
						logf("%s: run %d failed: %s", c, i, r.Error)
					case !r.Identical:
						failed = true
						logf("%s: run %d: nodes not identical: %s", c, i, strings.Join(r.Problems, "; "))
					default:
						logf("%s: run %d: add_node %.2f s, pg_dump|psql %.2f s, converged in %.1f s, identical",
							c, i, r.AddNodeS, r.RefS, r.ConvergeS)
					}
					res.Runs = append(res.Runs, r)
				}
				rep.Results = append(rep.Results, res)
				rep.PhaseNames = phaseNames(rep)
				for i := range rep.Results {
					rep.Results[i].Summary = summarize(rep.Results[i].config, rep.Results[i].Runs, len(rep.PhaseNames))
				}
				// Written after every configuration, so that an
				// interrupted matrix keeps what it measured.
				if err := writeOutputs(*out, rep, *rate, nil); err != nil {
					fmt.Fprintln(os.Stderr, "joinbench:", err)
					return 1
				}
			}
		}
	}

	var timelines strings.Builder
	for _, res := range rep.Results {
		if res.Load == "none" || (*timelineFlag != "all" && (*timelineFlag == "" || res.Rows != tlRows || res.Nodes != tlNodes)) {
			continue
		}
		for _, r := range res.Runs {
			if r.SourceBefore != nil && len(r.SourceTimeline) > 0 {
				var one strings.Builder
				writeTimeline(&one, res, r)
				timelines.WriteString(one.String())
				name := filepath.Join(*out, fmt.Sprintf("timeline-%s-%dn.md", human(res.Rows), res.Nodes))
				if err := os.WriteFile(name, []byte(one.String()), 0o644); err != nil {
					fmt.Fprintln(os.Stderr, "joinbench:", err)
					return 1
				}
				break
			}
		}
	}
	if err := writeOutputs(*out, rep, *rate, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "joinbench:", err)
		return 1
	}
	fmt.Print(timelines.String())
	logf("wrote %s, %s and %s", filepath.Join(*out, "join.json"), filepath.Join(*out, "join.svg"), filepath.Join(*out, "join.md"))
	if failed {
		return 1
	}
	return 0
}

// writeOutputs writes join.md, join.json and join.svg, and the table to
// stdout if given.
func writeOutputs(dir string, rep report, rate int, stdout *os.File) error {
	var md strings.Builder
	fmt.Fprintf(&md, "## add_node on one machine\n\n- machine: %s\n- versions: PostgreSQL %s, Spock %s, zodan %s, %s\n- started: %s\n",
		rep.Machine, rep.Versions.PostgreSQL, rep.Versions.Spock, rep.Machine.Zodan, rep.Machine.GoVersion, rep.Started)
	runs := 0
	for _, r := range rep.Results {
		runs = max(runs, len(r.Runs))
	}
	fmt.Fprintf(&md, "- runs per configuration: %d, the table shows medians", runs)
	if runs < 3 {
		md.WriteString(" (fewer than 3: a smoke run, not figures to quote)")
	}
	md.WriteString("\n\n")
	writeTable(&md, rep)
	writeNotes(&md, rep, rate)
	if stdout != nil {
		if _, err := stdout.WriteString(md.String()); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "join.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "join.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var svg strings.Builder
	writeSVG(&svg, rep)
	return os.WriteFile(filepath.Join(dir, "join.svg"), []byte(svg.String()), 0o644)
}

// prepareOut creates the output directory, git-ignored by a .gitignore of
// its own (nothing it holds belongs in the repository).
func prepareOut(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ignore := filepath.Join(dir, ".gitignore")
	if _, err := os.Stat(ignore); errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(ignore, []byte("# joinbench output (make bench-join): not part of the repository\n*\n"), 0o644)
	}
	return nil
}

// phaseNames are add_node's phases by number, as the journal names them.
func phaseNames(rep report) []string {
	var names []string
	for _, res := range rep.Results {
		for _, r := range res.Runs {
			for _, p := range r.Phases {
				for len(names) < p.No {
					names = append(names, "")
				}
				if names[p.No-1] == "" {
					names[p.No-1] = p.Name
				}
			}
		}
	}
	return names
}

func parseList[T any](s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := parse(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// parseRows reads a row count: 0, 100000, 100k, 5M.
func parseRows(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1000, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1_000_000, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("not a row count: %q", s)
	}
	return int64(v * float64(mult)), nil
}

func usage(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "joinbench: "+format+"\n", a...)
	flag.Usage()
	return 2
}
