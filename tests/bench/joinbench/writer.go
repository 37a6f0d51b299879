package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/spocktest"
)

// txn is one transaction a writer ran: when it started and when it
// committed (or failed).
type txn struct {
	start, end time.Time
	failed     bool
}

// writer runs short tpcb-like transactions on one node at a fixed rate:
// each updates a random account of its own share of pgbench_accounts
// (aid = idx mod writers, so that no two nodes update the same row and
// conflict resolution never has to pick a winner) and appends a
// pgbench_history row with tid = idx, so that every node's history can be
// checked against what each writer committed.
type writer struct {
	node    *spocktest.Node
	idx     int // 1-based: the node's number
	writers int // how many writers share the accounts
	rows    int64

	mu        sync.Mutex
	txns      []txn
	committed int64
	errs      []string
}

// writers is the load of one run: one writer per existing node.
type writers struct {
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	all     []*writer
	t0      time.Time
}

// startWriters connects a writer to each node and starts them; each runs
// rate transactions per second until stop.
func startWriters(ctx context.Context, nodes []*spocktest.Node, rows int64, rate int) (*writers, error) {
	ws := &writers{stop: make(chan struct{}), t0: time.Now()}
	conns := make([]*pgx.Conn, len(nodes))
	for i, n := range nodes {
		c, err := n.Connect(ctx, spocktest.Database)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close(context.Background())
			}
			return nil, err
		}
		conns[i] = c
		ws.all = append(ws.all, &writer{node: n, idx: i + 1, writers: len(nodes), rows: rows})
	}
	for i, w := range ws.all {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			defer conns[i].Close(context.Background())
			w.run(ctx, conns[i], rate, ws.stop)
		}()
	}
	return ws, nil
}

// run is one writer's loop. Stopping is checked between transactions
// only, so that every transaction's outcome is known. A transaction that
// takes longer than the interval delays the next (the ticker drops the
// ticks it missed): a stall shows as fewer transactions in that second
// and as the stalled transaction's latency.
func (w *writer) run(ctx context.Context, c *pgx.Conn, rate int, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		aid := w.account()
		bid := (aid-1)/100000 + 1
		delta := rand.IntN(10001) - 5000
		start := time.Now()
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2`, delta, aid); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)`,
				w.idx, bid, aid, delta)
			return err
		})
		end := time.Now()
		w.mu.Lock()
		w.txns = append(w.txns, txn{start: start, end: end, failed: err != nil})
		if err == nil {
			w.committed++
		} else {
			w.errs = append(w.errs, fmt.Sprintf("%s at %s: %v", w.node.Name, end.Format("15:04:05.000"), err))
		}
		w.mu.Unlock()
		if c.IsClosed() {
			return
		}
	}
}

// account picks a random account of this writer's share; with no
// accounts it picks 1, which the update then does not find.
func (w *writer) account() int64 {
	if w.rows < int64(w.idx) {
		return 1
	}
	share := (w.rows - int64(w.idx)) / int64(w.writers)
	return int64(w.idx) + int64(w.writers)*rand.Int64N(share+1)
}

// halt stops every writer and waits for them; it may be called again.
func (ws *writers) halt() {
	ws.stopped.Do(func() { close(ws.stop) })
	ws.wg.Wait()
}

// second is what the writers did in one second: transactions that ended
// in it, and their average and highest latency.
type second struct {
	T     int     `json:"t"` // seconds since the CALL started
	TPS   int     `json:"tps"`
	AvgMs float64 `json:"avg_ms"`
	MaxMs float64 `json:"max_ms"`
	Errs  int     `json:"errors,omitempty"`
}

// timeline buckets txns by the second (relative to origin) in which they
// ended, from second from to second to inclusive.
func timeline(txns []txn, origin time.Time, from, to int) []second {
	if to < from {
		return nil
	}
	out := make([]second, to-from+1)
	sums := make([]float64, len(out))
	for i := range out {
		out[i].T = from + i
	}
	for _, t := range txns {
		i := int(math.Floor(t.end.Sub(origin).Seconds())) - from
		if i < 0 || i >= len(out) {
			continue
		}
		if t.failed {
			out[i].Errs++
			continue
		}
		ms := float64(t.end.Sub(t.start).Microseconds()) / 1000
		out[i].TPS++
		sums[i] += ms
		out[i].MaxMs = max(out[i].MaxMs, ms)
	}
	for i := range out {
		if out[i].TPS > 0 {
			out[i].AvgMs = sums[i] / float64(out[i].TPS)
		}
	}
	return out
}

// window is what the writers did between two instants.
type window struct {
	TPS        float64 `json:"tps"`          // committed transactions per second
	AvgMs      float64 `json:"avg_ms"`       // mean latency
	WorstSecMs float64 `json:"worst_sec_ms"` // highest per-second average latency
	MaxMs      float64 `json:"max_ms"`       // slowest single transaction
	Errors     int     `json:"errors"`
}

// measure summarises txns that ended in [from, to): throughput and mean
// over the window, and the worst per-second average latency over the
// seconds (relative to origin) that overlap it.
func measure(txns []txn, origin, from, to time.Time) window {
	var w window
	var sum float64
	var n int
	for _, t := range txns {
		if t.end.Before(from) || !t.end.Before(to) {
			continue
		}
		if t.failed {
			w.Errors++
			continue
		}
		ms := float64(t.end.Sub(t.start).Microseconds()) / 1000
		sum += ms
		n++
		w.MaxMs = max(w.MaxMs, ms)
	}
	if d := to.Sub(from).Seconds(); d > 0 {
		w.TPS = float64(n) / d
	}
	if n > 0 {
		w.AvgMs = sum / float64(n)
	}
	first := int(math.Floor(from.Sub(origin).Seconds()))
	last := int(math.Ceil(to.Sub(origin).Seconds())) - 1
	for _, s := range timeline(txns, origin, first, last) {
		// A second only partly inside the window still counts: its
		// transactions ended while the window was open or right at it.
		w.WorstSecMs = max(w.WorstSecMs, s.AvgMs)
	}
	return w
}

// snapshot returns a copy of every writer's transactions, merged, and
// the source's (the first writer's) alone.
func (ws *writers) snapshot() (all, source []txn) {
	for i, w := range ws.all {
		w.mu.Lock()
		all = append(all, w.txns...)
		if i == 0 {
			source = append(source, w.txns...)
		}
		w.mu.Unlock()
	}
	return all, source
}

// measure summarises every writer over [from, to): the transactions per
// second of all of them together, their mean latency, and the worst
// per-second average latency and slowest transaction of any one writer
// (averaging the writers together would hide one node's stall).
func (ws *writers) measure(origin, from, to time.Time) window {
	var out window
	var sum float64
	var n float64
	for _, w := range ws.all {
		w.mu.Lock()
		m := measure(w.txns, origin, from, to)
		w.mu.Unlock()
		out.TPS += m.TPS
		k := m.TPS * to.Sub(from).Seconds()
		sum += m.AvgMs * k
		n += k
		out.WorstSecMs = max(out.WorstSecMs, m.WorstSecMs)
		out.MaxMs = max(out.MaxMs, m.MaxMs)
		out.Errors += m.Errors
	}
	if n > 0 {
		out.AvgMs = sum / n
	}
	return out
}
