package spocktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fingerprints summarises every user table of the node's database, like
// Digests, by its row count and an order-independent sum of a 64-bit hash
// of each row's text. Unlike Digests it needs no memory in proportion to
// the table (no sorted string of every row), so it suits tables of
// millions of rows; duplicates and differing values still show.
func Fingerprints(ctx context.Context, n *Node) (map[string]TableDigest, error) {
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
		err := c.QueryRow(ctx, `SELECT count(*), coalesce(sum(('x' || left(md5(x::text), 16))::bit(64)::bigint::numeric), 0)::text
		    FROM `+t+` x`).Scan(&d.Rows, &d.Digest)
		if err != nil {
			return nil, fmt.Errorf("fingerprint of %s on %s: %w", t, n.Name, err)
		}
		out[t] = d
	}
	return out, nil
}

// SameFingerprints compares the Fingerprints of every node once (call it
// when every node has applied every other node's changes, e.g. after
// SyncAll). It returns what each node holds and an error naming every
// table that differs.
func SameFingerprints(ctx context.Context, nodes []*Node) (map[string]map[string]TableDigest, error) {
	all := map[string]map[string]TableDigest{}
	for _, n := range nodes {
		d, err := Fingerprints(ctx, n)
		if err != nil {
			return all, err
		}
		all[n.Name] = d
	}
	var diffs []string
	ref := all[nodes[0].Name]
	for _, n := range nodes[1:] {
		for t, want := range ref {
			if got, ok := all[n.Name][t]; !ok || got != want {
				diffs = append(diffs, fmt.Sprintf("%s: %s has %d rows (%s), %s has %d (%s)",
					t, nodes[0].Name, want.Rows, want.Digest, n.Name, got.Rows, got.Digest))
			}
		}
		for t := range all[n.Name] {
			if _, ok := ref[t]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: only on %s", t, n.Name))
			}
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return all, errors.New("nodes differ: " + strings.Join(diffs, "; "))
	}
	return all, nil
}

// SyncAll emits a sync event on every node and polls until every other
// node has applied it (the remote LSN of the replication origin of its
// subscription from that node): afterwards every node has applied
// everything any node committed before the call. Every pair must
// subscribe to each other.
func SyncAll(ctx context.Context, nodes []*Node, limit time.Duration) error {
	lsns := map[string]string{}
	for _, n := range nodes {
		lsn, err := QueryValue[string](ctx, n, `SELECT spock.sync_event(true)::text`)
		if err != nil {
			return err
		}
		lsns[n.Name] = lsn
	}
	return Poll(ctx, limit, func() (bool, string, error) {
		var behind []string
		for _, origin := range nodes {
			for _, n := range nodes {
				if n == origin {
					continue
				}
				done, err := QueryValue[bool](ctx, n, `SELECT coalesce(bool_and(os.remote_lsn >= $2::pg_lsn), false)
				    FROM spock.subscription s
				    JOIN spock.node o ON o.node_id = s.sub_origin
				    JOIN pg_replication_origin_status os ON os.external_id = s.sub_slot_name
				   WHERE o.node_name = $1`, origin.Name, lsns[origin.Name])
				if err != nil {
					return false, "", err
				}
				if !done {
					behind = append(behind, fmt.Sprintf("%s has not applied %s's changes up to %s", n.Name, origin.Name, lsns[origin.Name]))
				}
			}
		}
		return len(behind) == 0, strings.Join(behind, "; "), nil
	})
}
