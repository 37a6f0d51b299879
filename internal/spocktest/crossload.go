package spocktest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// CrossLoadSchema is what the cross-node load writes to, created on one
// node and carried to the others by AutoDDL:
//   - orders: inserted on some nodes ("new"), marked paid on another node
//     shortly after they arrive there, and deleted on a third once paid;
//   - events: a table without a primary key (Spock puts it in
//     default_insert_only), appended to on every node.
const CrossLoadSchema = `
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    origin text NOT NULL,
    status text NOT NULL DEFAULT 'new',
    amount integer NOT NULL,
    paid_by text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX orders_status_created ON orders (status, created_at);
CREATE TABLE events (origin text NOT NULL, seq bigint NOT NULL, note text);`

// CrossLoadRoles says which node does what in a cross-node load.
type CrossLoadRoles struct {
	Inserters []*Node // insert orders and events
	Payer     *Node   // marks other nodes' orders paid (and appends events)
	Deleter   *Node   // deletes orders of Inserters[0] once paid
	// Settle is how old a row must be before the payer or deleter touches
	// it: long enough for steady-state replication to have brought it to
	// every node, far shorter than an initial copy.
	Settle time.Duration
	Rate   int // operations per second per worker
}

// CrossLoad is a running cross-node load.
type CrossLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	orders  map[string]int64 // orders inserted, by origin
	events  map[string]int64 // events appended, by origin
	paid    int64
	deleted int64
	errs    []error
}

// StartCrossLoad starts the workers; CrossLoadSchema must exist.
func StartCrossLoad(ctx context.Context, r CrossLoadRoles) (*CrossLoad, error) {
	l := &CrossLoad{stop: make(chan struct{}), orders: map[string]int64{}, events: map[string]int64{}}
	type worker struct {
		n   *Node
		run func(context.Context, *pgx.Conn, int64) error
	}
	var ws []worker
	for i, n := range r.Inserters {
		base := int64(i+1) * 1_000_000_000
		ws = append(ws, worker{n, func(ctx context.Context, c *pgx.Conn, tick int64) error {
			return l.insert(ctx, c, n.Name, base+tick)
		}})
	}
	settle := fmt.Sprintf("%d milliseconds", r.Settle.Milliseconds())
	ws = append(ws, worker{r.Payer, func(ctx context.Context, c *pgx.Conn, tick int64) error {
		tag, err := c.Exec(ctx, `UPDATE orders SET status = 'paid', paid_by = $1, amount = amount + 1
		     WHERE id IN (SELECT id FROM orders WHERE status = 'new' AND origin <> $1
		                    AND created_at < clock_timestamp() - $2::interval
		                  ORDER BY created_at DESC LIMIT 3)`, r.Payer.Name, settle)
		if err != nil {
			return fmt.Errorf("paying orders on %s: %w", r.Payer.Name, err)
		}
		l.mu.Lock()
		l.paid += tag.RowsAffected()
		l.mu.Unlock()
		return l.event(ctx, c, r.Payer.Name)
	}})
	ws = append(ws, worker{r.Deleter, func(ctx context.Context, c *pgx.Conn, tick int64) error {
		if tick%2 == 1 {
			return nil
		}
		tag, err := c.Exec(ctx, `DELETE FROM orders
		     WHERE id IN (SELECT id FROM orders WHERE status = 'paid' AND origin = $1
		                    AND created_at < clock_timestamp() - 2 * $2::interval
		                  ORDER BY created_at DESC LIMIT 1)`, r.Inserters[0].Name, settle)
		if err != nil {
			return fmt.Errorf("deleting orders on %s: %w", r.Deleter.Name, err)
		}
		l.mu.Lock()
		l.deleted += tag.RowsAffected()
		l.mu.Unlock()
		return nil
	}})

	conns := make([]*pgx.Conn, len(ws))
	for i, w := range ws {
		c, err := w.n.Connect(ctx, Database)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close(context.Background())
			}
			return nil, err
		}
		conns[i] = c
	}
	for i, w := range ws {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer conns[i].Close(context.Background())
			tick := time.NewTicker(time.Second / time.Duration(r.Rate))
			defer tick.Stop()
			for n := int64(1); ; n++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := w.run(ctx, conns[i], n); err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				}
			}
		}()
	}
	return l, nil
}

func (l *CrossLoad) insert(ctx context.Context, c *pgx.Conn, origin string, id int64) error {
	if _, err := c.Exec(ctx, `INSERT INTO orders (id, origin, amount) VALUES ($1, $2, $3)`, id, origin, id%1000); err != nil {
		return fmt.Errorf("inserting an order on %s: %w", origin, err)
	}
	l.mu.Lock()
	l.orders[origin]++
	l.mu.Unlock()
	return l.event(ctx, c, origin)
}

func (l *CrossLoad) event(ctx context.Context, c *pgx.Conn, origin string) error {
	l.mu.Lock()
	seq := l.events[origin] + 1
	l.mu.Unlock()
	if _, err := c.Exec(ctx, `INSERT INTO events (origin, seq, note) VALUES ($1, $2, 'e')`, origin, seq); err != nil {
		return fmt.Errorf("appending an event on %s: %w", origin, err)
	}
	l.mu.Lock()
	l.events[origin] = seq
	l.mu.Unlock()
	return nil
}

// CrossLoadResult is what a cross-node load did.
type CrossLoadResult struct {
	Orders  map[string]int64 // inserted, by origin
	Events  map[string]int64 // appended, by origin
	Paid    int64
	Deleted int64
	Errors  []error
}

// Stop ends the load and reports what it committed.
func (l *CrossLoad) Stop() CrossLoadResult {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := CrossLoadResult{Orders: map[string]int64{}, Events: map[string]int64{}, Paid: l.paid, Deleted: l.deleted, Errors: l.errs}
	for k, v := range l.orders {
		r.Orders[k] = v
	}
	for k, v := range l.events {
		r.Events[k] = v
	}
	return r
}

// TableDigest is one table's row count and an order-independent digest
// of its rows on one node.
type TableDigest struct {
	Rows   int64
	Digest string
}

// Digests summarises every user table of the node's database: its row
// count and an md5 over its rows' text, sorted, so duplicates and
// differing values both show.
func Digests(ctx context.Context, n *Node) (map[string]TableDigest, error) {
	c, err := n.Connect(ctx, Database)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
	    JOIN pg_namespace n ON n.oid = c.relnamespace
	   WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'spock', 'pg_toast')
	   ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", n.Name, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", n.Name, err)
	}
	out := map[string]TableDigest{}
	for _, t := range tables {
		var d TableDigest
		// t comes from format('%I.%I') above, so it is a quoted name.
		err := c.QueryRow(ctx, `SELECT count(*), md5(coalesce(string_agg(r, E'\n' ORDER BY r), ''))
		    FROM (SELECT x::text AS r FROM `+t+` x) q`).Scan(&d.Rows, &d.Digest)
		if err != nil {
			return nil, fmt.Errorf("digest of %s on %s: %w", t, n.Name, err)
		}
		out[t] = d
	}
	return out, nil
}

// Identical waits until every user table has the same rows on every
// node, and returns the digests it settled on. The error lists the tables
// that still differ and how.
func Identical(ctx context.Context, nodes []*Node, limit time.Duration) (map[string]map[string]TableDigest, error) {
	var last map[string]map[string]TableDigest
	err := Poll(ctx, limit, func() (bool, string, error) {
		last = map[string]map[string]TableDigest{}
		for _, n := range nodes {
			d, err := Digests(ctx, n)
			if err != nil {
				return false, "", err
			}
			last[n.Name] = d
		}
		var diffs []string
		ref := last[nodes[0].Name]
		for _, n := range nodes[1:] {
			for t, want := range ref {
				if got := last[n.Name][t]; got != want {
					diffs = append(diffs, fmt.Sprintf("%s: %s has %d rows (%.8s), %s has %d (%.8s)",
						t, nodes[0].Name, want.Rows, want.Digest, n.Name, got.Rows, got.Digest))
				}
			}
			if len(last[n.Name]) != len(ref) {
				diffs = append(diffs, fmt.Sprintf("%s has %d tables, %s has %d", n.Name, len(last[n.Name]), nodes[0].Name, len(ref)))
			}
		}
		return len(diffs) == 0, strings.Join(diffs, "; "), nil
	})
	if err != nil {
		return last, errors.New("nodes differ: " + err.Error())
	}
	return last, nil
}
