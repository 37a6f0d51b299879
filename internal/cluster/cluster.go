// Package cluster finds the nodes of a Spock cluster and runs a piece of
// work on several nodes at once.
package cluster

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/dsn"
)

// Node is one database to work on.
type Node struct {
	// Name is the Spock node name, or the DSN's label for a node given by
	// DSN alone.
	Name string
	// DSN connects to it. Never print it: use dsn.Label or dsn.Mask.
	DSN string
}

// Label names the node for output: "n1 (db1:5432/app)".
func (n Node) Label() string {
	l := dsn.Label(n.DSN)
	if n.Name == "" || n.Name == l {
		return l
	}
	return n.Name + " (" + l + ")"
}

// FromDSNs turns DSNs given on the command line into nodes.
func FromDSNs(dsns []string) []Node {
	nodes := make([]Node, len(dsns))
	for i, d := range dsns {
		nodes[i] = Node{Name: dsn.Label(d), DSN: d}
	}
	return nodes
}

// Discover lists every node of the cluster that the node at connString
// belongs to, with the DSN Spock uses to reach it (spock.node_interface),
// in node name order.
func Discover(ctx context.Context, connString string) ([]Node, error) {
	conn, err := dbconn.Connect(ctx, connString, dbconn.Options{ApplicationName: "zodan-install"})
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var hasSpock bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'spock')`).Scan(&hasSpock); err != nil {
		return nil, err
	}
	if !hasSpock {
		return nil, fmt.Errorf("%s has no spock extension, so it has no cluster to list; give every node with --dsn instead", dsn.Label(connString))
	}
	rows, err := conn.Query(ctx, `
		SELECT name, dsn FROM (
		    SELECT DISTINCT ON (n.node_id) n.node_name::text AS name, i.if_dsn AS dsn
		      FROM spock.node n JOIN spock.node_interface i ON i.if_nodeid = n.node_id
		     ORDER BY n.node_id, i.if_id) AS nodes
		 ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing the nodes of %s: %w", dsn.Label(connString), err)
	}
	nodes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Node])
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%s is not a Spock node yet (spock.node is empty); give every node with --dsn instead", dsn.Label(connString))
	}
	return nodes, nil
}

// Outcome is what Each's work returned for one node.
type Outcome[T any] struct {
	Node   Node
	Result T
	Err    error
}

// Each runs work on every node at once and sends each node's outcome on
// the returned channel in the order of nodes, as soon as it and every
// node before it are done: output stays in a stable order while slow
// nodes do not hold up the work on others.
func Each[T any](ctx context.Context, nodes []Node, work func(context.Context, Node) (T, error)) <-chan Outcome[T] {
	slots := make([]chan Outcome[T], len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		slots[i] = make(chan Outcome[T], 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := work(ctx, n)
			slots[i] <- Outcome[T]{Node: n, Result: r, Err: err}
		}()
	}
	out := make(chan Outcome[T])
	go func() {
		defer close(out)
		for _, s := range slots {
			out <- <-s
		}
		wg.Wait()
	}()
	return out
}
