package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// stallTarget is the goal for the writers: the source's worst second
// during the join at most this many times its steady-state latency.
const stallTarget = 2.0

// summary is the medians of a configuration's successful runs.
type summary struct {
	config
	Runs      int   `json:"runs"`
	Failed    int   `json:"failed"`
	Identical int   `json:"identical"` // runs that ended with every node identical
	AddNodeS  num   `json:"add_node_s"`
	PhaseS    []num `json:"phase_s"` // by phase number - 1
	RefS      num   `json:"pg_dump_psql_s"`
	AddRatio  num   `json:"add_node_to_ref"` // median add_node / median pg_dump|psql
	CopyRatio num   `json:"copy_to_ref"`     // median copy phase / median pg_dump|psql
	// With load (medians of each figure over the runs).
	Before       *window `json:"before,omitempty"`
	During       *window `json:"during,omitempty"`
	SourceBefore *window `json:"source_before,omitempty"`
	SourceDuring *window `json:"source_during,omitempty"`
	// The source's worst per-second latency during the join over its
	// steady-state mean latency (median over the runs).
	SourceStall num `json:"source_stall_ratio,omitempty"`
	// The same for pg_dump|psql of the same rows under the same load.
	RefStall num `json:"pg_dump_stall_ratio,omitempty"`
}

// result is one configuration: every run and their medians.
type result struct {
	config
	Runs    []runResult `json:"runs"`
	Summary summary     `json:"median"`
}

// report is everything join.json holds.
type report struct {
	Machine    machine  `json:"machine"`
	Versions   versions `json:"versions"`
	Started    string   `json:"started"`
	Settings   any      `json:"settings"`
	PhaseNames []string `json:"phase_names"`
	Results    []result `json:"results"`
}

// num is a figure that may be unknown (NaN), which JSON writes as null.
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, math.Round(f*10000)/10000, 'f', -1, 64), nil
}

// median of the known values of xs (NaN when there is none).
func median(xs []float64) float64 {
	s := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf is the median of f over the runs.
func medianOf(runs []runResult, f func(runResult) float64) num {
	xs := make([]float64, 0, len(runs))
	for _, r := range runs {
		xs = append(xs, f(r))
	}
	return num(median(xs))
}

func medianWindow(runs []runResult, pick func(runResult) *window) *window {
	var ws []*window
	for _, r := range runs {
		if w := pick(r); w != nil {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return nil
	}
	m := func(f func(*window) float64) float64 {
		xs := make([]float64, len(ws))
		for i, w := range ws {
			xs[i] = f(w)
		}
		return median(xs)
	}
	return &window{
		TPS:        m(func(w *window) float64 { return w.TPS }),
		AvgMs:      m(func(w *window) float64 { return w.AvgMs }),
		WorstSecMs: m(func(w *window) float64 { return w.WorstSecMs }),
		MaxMs:      m(func(w *window) float64 { return w.MaxMs }),
		Errors:     int(m(func(w *window) float64 { return float64(w.Errors) })),
	}
}

func phaseSeconds(r runResult, no int) float64 {
	for _, p := range r.Phases {
		if p.No == no {
			return p.Seconds
		}
	}
	return math.NaN()
}

func summarize(c config, runs []runResult, phases int) summary {
	s := summary{config: c, Runs: len(runs)}
	var ok []runResult
	for _, r := range runs {
		if r.Error != "" {
			s.Failed++
			continue
		}
		ok = append(ok, r)
		if r.Identical {
			s.Identical++
		}
	}
	if len(ok) == 0 {
		return s
	}
	s.AddNodeS = medianOf(ok, func(r runResult) float64 { return r.AddNodeS })
	for no := 1; no <= phases; no++ {
		s.PhaseS = append(s.PhaseS, medianOf(ok, func(r runResult) float64 { return phaseSeconds(r, no) }))
	}
	s.RefS = medianOf(ok, func(r runResult) float64 { return r.RefS })
	if s.RefS > 0 {
		s.AddRatio = s.AddNodeS / s.RefS
		if len(s.PhaseS) >= 4 {
			s.CopyRatio = s.PhaseS[3] / s.RefS
		}
	}
	s.Before = medianWindow(ok, func(r runResult) *window { return r.Before })
	s.During = medianWindow(ok, func(r runResult) *window { return r.During })
	s.SourceBefore = medianWindow(ok, func(r runResult) *window { return r.SourceBefore })
	s.SourceDuring = medianWindow(ok, func(r runResult) *window { return r.SourceDuring })
	if s.SourceBefore != nil {
		s.SourceStall = medianOf(ok, stallRatio)
		s.RefStall = medianOf(ok, refStallRatio)
	}
	return s
}

// stallRatio is the source's worst second during the join over its
// steady-state mean latency.
func stallRatio(r runResult) float64 {
	if r.SourceBefore == nil || r.SourceDuring == nil || r.SourceBefore.AvgMs == 0 {
		return math.NaN()
	}
	return r.SourceDuring.WorstSecMs / r.SourceBefore.AvgMs
}

// refStallRatio is stallRatio for the pg_dump|psql reference.
func refStallRatio(r runResult) float64 {
	if r.SourceBefore == nil || r.SourceRef == nil || r.SourceBefore.AvgMs == 0 {
		return math.NaN()
	}
	return r.SourceRef.WorstSecMs / r.SourceBefore.AvgMs
}

func secs(n num) string {
	x := float64(n)
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

func ms(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	if x >= 100 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

// writeTable prints the markdown table of every configuration.
func writeTable(w io.Writer, rep report) {
	head := []string{"rows", "nodes", "load", "add_node s"}
	for i, n := range rep.PhaseNames {
		head = append(head, fmt.Sprintf("%d %s", i+1, n))
	}
	head = append(head, "pg_dump\\|psql s", "add/ref", "copy/ref",
		"tps before", "tps during", "worst s ms before", "worst s ms during", "src worst/steady", "pg_dump\\|psql worst/steady", "identical")
	fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
	align := make([]string, len(head))
	for i := range align {
		align[i] = "---:"
	}
	align[2] = "---"
	align[len(align)-1] = "---"
	fmt.Fprintln(w, "|"+strings.Join(align, "|")+"|")
	for _, res := range rep.Results {
		s := res.Summary
		row := []string{human(s.Rows), fmt.Sprint(s.Nodes), s.Load}
		if s.Failed == s.Runs {
			row = append(row, "FAILED")
			for range len(head) - 5 {
				row = append(row, "")
			}
			row = append(row, fmt.Sprintf("%d/%d failed", s.Failed, s.Runs))
			fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
			continue
		}
		row = append(row, secs(s.AddNodeS))
		for i := range rep.PhaseNames {
			if i < len(s.PhaseS) {
				row = append(row, secs(s.PhaseS[i]))
			} else {
				row = append(row, "-")
			}
		}
		row = append(row, secs(s.RefS), fmt.Sprintf("%.1fx", s.AddRatio), fmt.Sprintf("%.1fx", s.CopyRatio))
		if s.Before != nil {
			verdict := "ok"
			if s.SourceStall > stallTarget {
				verdict = "OVER"
			}
			row = append(row, fmt.Sprintf("%.0f", s.Before.TPS), fmt.Sprintf("%.0f", s.During.TPS),
				ms(s.Before.WorstSecMs), ms(s.During.WorstSecMs), fmt.Sprintf("%.2fx %s", s.SourceStall, verdict),
				fmt.Sprintf("%.2fx", s.RefStall))
		} else {
			row = append(row, "-", "-", "-", "-", "-", "-")
		}
		ident := fmt.Sprintf("%d/%d", s.Identical, s.Runs)
		if s.Identical == s.Runs {
			ident = "yes " + ident
		} else {
			ident = "NO " + ident
		}
		row = append(row, ident)
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
}

// writeNotes explains the columns and lists what went wrong.
func writeNotes(w io.Writer, rep report, rate int) {
	fmt.Fprintf(w, `
Medians of the runs of each row. rows: pgbench_accounts rows on every node before the join.
nodes: cluster size before the join (a new node joins from n1). add_node s: wall time of the CALL;
phase columns: seconds per phase from spock.zodan_operations.phases. pg_dump|psql s: pg_dump -t
pgbench_accounts from n1 piped into psql into a fresh database on the new node (same machine,
under the same load as the join); add/ref and copy/ref: add_node and its copy phase over that
reference. With load=steady a
writer per existing node runs %d tpcb-like transactions/s (update a random account, insert a
history row): tps is all writers together, "worst s ms" the highest per-second average latency
of any one writer, before the join (steady state) and during it; src worst/steady is the source
(n1) writer's worst second during the join over its steady-state mean (target <= %.0fx), and
pg_dump|psql worst/steady the same during the reference copy: what moving those rows costs the
writers on this machine, whoever moves them.
identical: every table the same on every node (row count and row hashes) after all nodes applied
each other's changes, no spock.exception_log entry, every committed history row everywhere.
`, rate, stallTarget)
	for _, res := range rep.Results {
		for _, r := range res.Runs {
			if r.Error != "" {
				fmt.Fprintf(w, "\n%s run %d failed: %s\n", res.config, r.Run, r.Error)
			}
			for _, p := range r.Problems {
				fmt.Fprintf(w, "\n%s run %d: %s\n", res.config, r.Run, p)
			}
			if len(r.SubRestarts) > 0 {
				fmt.Fprintf(w, "\n%s run %d: building the cluster, restarted subscriptions Spock left down: %s\n", res.config, r.Run, strings.Join(r.SubRestarts, ", "))
			}
			if len(r.WriterErrors) > 0 {
				fmt.Fprintf(w, "\n%s run %d: %d writer errors, first: %s\n", res.config, r.Run, len(r.WriterErrors), r.WriterErrors[0])
			}
		}
	}
}

// writeTimeline prints, for one run under load, the source's writer per
// second with the phases that ran in each second, and per phase.
func writeTimeline(w io.Writer, res result, r runResult) {
	fmt.Fprintf(w, "\n### Timeline: %s, run %d: the source's (n1's) writer, per second (t = 0 at the CALL)\n\n", res.config, r.Run)
	fmt.Fprintf(w, "add_node took %.2f s; steady state before it: %.1f tps, %.2f ms mean, worst second %.2f ms\n\n",
		r.AddNodeS, r.SourceBefore.TPS, r.SourceBefore.AvgMs, r.SourceBefore.WorstSecMs)
	fmt.Fprintln(w, "| phase | from s | to s | s | src tps | src avg ms | src worst s ms | src max ms | worst s / steady |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, p := range r.Phases {
		if p.Source == nil {
			continue
		}
		ratio := "-"
		if r.SourceBefore.AvgMs > 0 && p.Source.WorstSecMs > 0 {
			ratio = fmt.Sprintf("%.1fx", p.Source.WorstSecMs/r.SourceBefore.AvgMs)
		}
		out := ""
		if p.Outcome != "done" {
			out = " (" + p.Outcome + ")"
		}
		// A phase shorter than a second has too few transactions for a
		// rate; one without any has no latency of its own.
		tps, avg, mx := "-", "-", "-"
		if p.Seconds >= 1 {
			tps = fmt.Sprintf("%.0f", p.Source.TPS)
		}
		if p.Source.AvgMs > 0 {
			avg, mx = ms(p.Source.AvgMs), ms(p.Source.MaxMs)
		}
		fmt.Fprintf(w, "| %d %s%s | %.2f | %.2f | %.2f | %s | %s | %s | %s | %s |\n", p.No, p.Name, out, p.From, p.To, p.Seconds,
			tps, avg, ms(p.Source.WorstSecMs), mx, ratio)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "```")
	fmt.Fprintf(w, "%5s %4s %8s %8s  %s\n", "t", "tps", "avg ms", "max ms", "phases in that second (and add_node's messages)")
	for _, sec := range r.SourceTimeline {
		var active []string
		for _, p := range r.Phases {
			to := p.To
			if p.Finished.IsZero() {
				to = r.AddNodeS
			}
			if p.From < float64(sec.T+1) && to >= float64(sec.T) {
				active = append(active, fmt.Sprintf("%d %s", p.No, p.Name))
			}
		}
		bar := strings.Repeat("#", min(60, int(math.Round(sec.AvgMs/max(r.SourceBefore.AvgMs, 0.001)))))
		line := fmt.Sprintf("%5d %4d %8s %8s  %-60s %s", sec.T, sec.TPS, ms(sec.AvgMs), ms(sec.MaxMs), bar, strings.Join(active, ", "))
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		for _, n := range r.Notices {
			if n.At >= float64(sec.T) && n.At < float64(sec.T+1) && interesting(n.Msg) {
				fmt.Fprintf(w, "%5s %4s %8s %8s    @%.2f %s\n", "", "", "", "", n.At, trimNotice(n.Msg))
			}
		}
	}
	fmt.Fprintln(w, "```")
	fmt.Fprintln(w, "(# = the second's average latency in multiples of the steady-state mean)")
}

// interesting picks add_node's messages worth showing in a timeline.
func interesting(msg string) bool {
	if strings.Contains(msg, " phase ") {
		// Phase starts and ends are in the phase table already.
		return false
	}
	for _, k := range []string{"paused for", "copied", "resumed", "starts after", "caught up", "created disabled"} {
		if strings.Contains(msg, k) {
			return true
		}
	}
	return false
}

func trimNotice(msg string) string {
	if i := strings.Index(msg, "] "); i >= 0 && strings.HasPrefix(msg, "[") {
		msg = msg[i+2:]
	}
	msg = strings.TrimSpace(msg)
	if len(msg) > 110 {
		msg = msg[:107] + "..."
	}
	return msg
}

// human writes a row count as 0, 100k, 1M, 2.5M.
func human(n int64) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + "M"
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
