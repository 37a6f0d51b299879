package spocktest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// LoadTable is where the write load writes: one row per committed insert,
// keyed by the node that committed it, so that every node can be checked
// for exactly the rows each origin committed.
const LoadTable = "load_rows"

// CreateLoadTable creates the load table on the first of nodes and waits
// until AutoDDL has carried it to the others (and into the default
// replication set everywhere).
func CreateLoadTable(ctx context.Context, nodes []*Node) error {
	err := nodes[0].Exec(ctx, Database, `CREATE TABLE `+LoadTable+` (
		origin text NOT NULL,
		seq bigint NOT NULL,
		v integer NOT NULL DEFAULT 0,
		PRIMARY KEY (origin, seq))`)
	if err != nil {
		return err
	}
	return WaitForRelation(ctx, nodes, LoadTable, 2*time.Minute)
}

// Load writes to several nodes at once: each writer inserts rows as its
// node, at most rate per second, and the updater (if any) also updates
// rows its node inserted. It records what was committed and every error a
// client saw.
type Load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	committed map[string]int64
	updates   int64
	errs      map[string][]error
	stalls    time.Duration // longest time one statement took
}

// StartLoad starts a writer on each of nodes; updater names the node that
// also updates its rows ("" for none).
func StartLoad(ctx context.Context, nodes []*Node, updater string, rate int) (*Load, error) {
	l := &Load{stop: make(chan struct{}), committed: map[string]int64{}, errs: map[string][]error{}}
	conns := make([]*pgx.Conn, 0, len(nodes))
	fail := func(err error) (*Load, error) {
		for _, c := range conns {
			c.Close(context.Background())
		}
		return nil, err
	}
	for _, n := range nodes {
		c, err := n.Connect(ctx, Database)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, c)
		var start int64
		if err := c.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM `+LoadTable+` WHERE origin = $1`, n.Name).Scan(&start); err != nil {
			return fail(err)
		}
		l.committed[n.Name] = start
	}
	for i, n := range nodes {
		l.wg.Add(1)
		go l.write(ctx, n, conns[i], n.Name == updater, rate)
	}
	return l, nil
}

// write runs one writer. Stopping is only checked between statements:
// cancelling one in flight would leave it unknown whether it committed.
// When its node goes away (a restart), the writer records the error,
// reconnects, and settles from the table whether the statement in flight
// had committed.
func (l *Load) write(ctx context.Context, n *Node, c *pgx.Conn, update bool, rate int) {
	defer l.wg.Done()
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	origin := n.Name
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	l.mu.Lock()
	seq := l.committed[origin]
	l.mu.Unlock()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if c == nil || c.IsClosed() {
			var err error
			if c, err = n.Connect(ctx, Database); err != nil {
				c = nil
				continue // the node is still down; try again next tick
			}
			var found int64
			if err := c.QueryRow(ctx, `SELECT count(*) FROM `+LoadTable+` WHERE origin = $1 AND seq = $2`, origin, seq+1).Scan(&found); err != nil {
				continue
			}
			if found == 1 {
				seq++
				l.record(origin, seq, 0, nil)
			}
		}
		start := time.Now()
		_, err := c.Exec(ctx, `INSERT INTO `+LoadTable+` (origin, seq) VALUES ($1, $2)`, origin, seq+1)
		if err == nil {
			seq++
		}
		l.record(origin, seq, time.Since(start), err)
		if update && err == nil && seq > 1 {
			_, err := c.Exec(ctx, `UPDATE `+LoadTable+` SET v = v + 1 WHERE origin = $1 AND seq = $2`, origin, 1+rand.Int64N(seq-1))
			l.mu.Lock()
			if err != nil {
				l.errs[origin] = append(l.errs[origin], fmt.Errorf("update on %s: %w", origin, err))
			} else {
				l.updates++
			}
			l.mu.Unlock()
		}
	}
}

func (l *Load) record(origin string, seq int64, took time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stalls = max(l.stalls, took)
	l.committed[origin] = seq
	if err != nil {
		l.errs[origin] = append(l.errs[origin], fmt.Errorf("insert on %s: %w", origin, err))
	}
}

// LoadResult is what a load did.
type LoadResult struct {
	Committed   map[string]int64 // rows each origin committed
	Updates     int64
	Errors      map[string][]error // what the clients of each node saw
	LongestStmt time.Duration
}

// AllErrors lists every error any client saw.
func (r LoadResult) AllErrors() []error {
	var all []error
	for _, errs := range r.Errors {
		all = append(all, errs...)
	}
	return all
}

// Total is the number of rows committed on all nodes.
func (r LoadResult) Total() int64 {
	var t int64
	for _, n := range r.Committed {
		t += n
	}
	return t
}

// Stop ends the load and reports what it did.
func (l *Load) Stop() LoadResult {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := LoadResult{Committed: map[string]int64{}, Errors: map[string][]error{}, Updates: l.updates, LongestStmt: l.stalls}
	for k, v := range l.committed {
		r.Committed[k] = v
	}
	for k, v := range l.errs {
		r.Errors[k] = v
	}
	return r
}

// Converged waits until every node holds exactly the committed rows of
// every origin, then checks that all nodes hold identical content (an
// ordered checksum over every row, updates included).
func Converged(ctx context.Context, nodes []*Node, committed map[string]int64, limit time.Duration) error {
	err := Poll(ctx, limit, func() (bool, string, error) {
		var behind []string
		for _, n := range nodes {
			for origin, want := range committed {
				got, err := QueryValue[int64](ctx, n, `SELECT count(*) FROM `+LoadTable+` WHERE origin = $1`, origin)
				if err != nil {
					return false, "", err
				}
				if got > want {
					return false, "", fmt.Errorf("%s has %d rows from %s, but only %d were committed there", n.Name, got, origin, want)
				}
				if got < want {
					behind = append(behind, fmt.Sprintf("%s has %d/%d rows from %s", n.Name, got, want, origin))
				}
			}
		}
		return len(behind) == 0, strings.Join(behind, "; "), nil
	})
	if err != nil {
		return fmt.Errorf("rows missing: %w", err)
	}
	return Poll(ctx, limit, func() (bool, string, error) {
		sums := map[string][]string{}
		for _, n := range nodes {
			sum, err := QueryValue[string](ctx, n, `SELECT md5(coalesce(string_agg(origin || ':' || seq || ':' || v, ',' ORDER BY origin, seq), '')) FROM `+LoadTable)
			if err != nil {
				return false, "", err
			}
			sums[sum] = append(sums[sum], n.Name)
		}
		if len(sums) == 1 {
			return true, "", nil
		}
		return false, fmt.Sprintf("content differs: %v", sums), nil
	})
}
