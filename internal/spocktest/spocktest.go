// Package spocktest runs local Spock clusters for the end-to-end tests and
// the demo: every node is its own PostgreSQL instance (from
// ZODAN_SPOCK_BINDIR) on its own port and data directory, configured as
// pgEdge ships Spock (AutoDDL on), with zodan installed by the installer.
package spocktest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// BinDirEnv names the environment variable that points at the bin
// directory of a PostgreSQL with Spock installed.
const BinDirEnv = "ZODAN_SPOCK_BINDIR"

// SkipMessage explains how to enable what needs Spock.
const SkipMessage = BinDirEnv + " is not set: set it to the bin directory of a PostgreSQL 15 with Spock 5.0.x (and dblink) installed, e.g. " +
	BinDirEnv + "=/opt/pgspock/bin, to run the end-to-end tests against real Spock"

// BinDir returns ZODAN_SPOCK_BINDIR, checking that it holds a PostgreSQL
// with the spock library; ok is false when it is unset.
func BinDir() (dir string, ok bool, err error) {
	dir = os.Getenv(BinDirEnv)
	if dir == "" {
		return "", false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return dir, true, fmt.Errorf("%s=%s has no postgres binary: %w", BinDirEnv, dir, err)
	}
	return dir, true, nil
}

// Database is the database every node replicates.
const Database = "app"

// Settings are the postgresql.conf lines of every node.
var Settings = map[string]string{
	"shared_preload_libraries":       "'spock'",
	"wal_level":                      "logical",
	"track_commit_timestamp":         "on",
	"max_replication_slots":          "16",
	"max_wal_senders":                "16",
	"max_worker_processes":           "32",
	"max_connections":                "100",
	"spock.enable_ddl_replication":   "on",
	"spock.include_ddl_repset":       "on",
	"spock.allow_ddl_from_functions": "on",
	"spock.conflict_resolution":      "last_update_wins",
	"log_min_messages":               "warning",
	"wal_sender_timeout":             "10s",
	"wal_receiver_timeout":           "10s",
}

// settingsFor adds to Settings what the server in binDir needs. Minor
// releases from 15.19, 16.15, 17.11 and 18.6 on accept only the logical
// decoding output plugins named in output_plugin_libraries, so Spock's
// spock_output must be listed (Spock's README says so); older servers do
// not know the setting and refuse to start with it. It must be there from
// the first start: a reload does not reach slot creation.
func settingsFor(binDir string) (map[string]string, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("asking %s for its version: %w", filepath.Join(binDir, "postgres"), err)
	}
	m := regexp.MustCompile(`(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		return nil, fmt.Errorf("cannot read a version in %q", out)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	firstWithList := map[int]int{15: 19, 16: 15, 17: 11, 18: 6}
	settings := maps.Clone(Settings)
	if first, known := firstWithList[major]; (known && minor >= first) || major > 18 {
		settings["output_plugin_libraries"] = "'pgoutput, test_decoding, spock_output'"
	}
	return settings, nil
}

// PostgresMajor is the major version of the PostgreSQL in binDir.
func PostgresMajor(binDir string) (int, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("asking %s for its version: %w", filepath.Join(binDir, "postgres"), err)
	}
	m := regexp.MustCompile(`(\d+)\.\d+`).FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("cannot read a version in %q", out)
	}
	return strconv.Atoi(m[1])
}

// Node is one Spock node.
type Node struct {
	Name    string
	Cluster *pgtest.Cluster
}

// DSN connects to the node's replicated database.
func (n *Node) DSN() string { return n.Cluster.DSN(Database) }

// NewNode starts a PostgreSQL with Spock, creates the replicated database
// with the spock and dblink extensions, and installs zodan. The node is
// not registered as a Spock node. The caller destroys it.
func NewNode(ctx context.Context, binDir, name string) (*Node, error) {
	return NewNodeWith(ctx, binDir, name, NodeOptions{})
}

// NodeOptions change how a node is set up.
type NodeOptions struct {
	// Password, when set, is the superuser's password, and TCP
	// connections (replication ones too) must give it. DSN() carries it.
	Password string
	// Settings are added to (and override) the node's postgresql.conf.
	Settings map[string]string
}

// NewNodeWith is NewNode with options.
func NewNodeWith(ctx context.Context, binDir, name string, opts NodeOptions) (*Node, error) {
	settings, err := settingsFor(binDir)
	if err != nil {
		return nil, err
	}
	maps.Copy(settings, opts.Settings)
	c, err := pgtest.New(pgtest.Options{BinDir: binDir, Name: name, Settings: settings, Password: opts.Password})
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		c.Destroy()
		return nil, err
	}
	n := &Node{Name: name, Cluster: c}
	if err := n.Exec(ctx, "postgres", "CREATE DATABASE "+Database); err != nil {
		c.Destroy()
		return nil, err
	}
	if err := n.Exec(ctx, Database, "CREATE EXTENSION spock; CREATE EXTENSION dblink"); err != nil {
		c.Destroy()
		return nil, err
	}
	if err := n.Install(ctx); err != nil {
		c.Destroy()
		return nil, err
	}
	return n, nil
}

// Install installs (or repairs) zodan on the node, as zodan-install does.
func (n *Node) Install(ctx context.Context) error {
	conn, err := dbconn.Connect(ctx, n.DSN(), dbconn.Options{ApplicationName: "zodan-install"})
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	in, err := install.New(conn, render.DefaultSchema, render.Options{})
	if err != nil {
		return err
	}
	if _, err := in.Install(ctx); err != nil {
		return fmt.Errorf("installing zodan on %s: %w", n.Name, err)
	}
	return nil
}

// Connect opens a plain connection to db on the node, as an application
// would: with AutoDDL as the server is configured (zodan's own
// connections switch it off).
func (n *Node) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, n.Cluster.DSN(db)+" application_name=spocktest")
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", n.Name, err)
	}
	return conn, nil
}

// Exec runs SQL on db of the node.
func (n *Node) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := n.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("on %s: %w", n.Name, err)
	}
	return nil
}

// QueryValue runs a query returning one value on the node's database.
func QueryValue[T any](ctx context.Context, n *Node, sql string, args ...any) (T, error) {
	var v T
	conn, err := n.Connect(ctx, Database)
	if err != nil {
		return v, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, sql, args...).Scan(&v)
	if err != nil {
		err = fmt.Errorf("on %s: %w", n.Name, err)
	}
	return v, err
}

// Register makes the node a Spock node.
func (n *Node) Register(ctx context.Context) error {
	return n.Exec(ctx, Database, "SELECT spock.node_create($1, $2)", n.Name, n.DSN())
}

// Subscribe creates the subscription that makes n receive provider's
// changes, the way a cluster is built by hand.
func (n *Node) Subscribe(ctx context.Context, provider *Node) error {
	return n.Exec(ctx, Database, "SELECT spock.sub_create($1, $2)",
		"sub_"+provider.Name+"_"+n.Name, provider.DSN())
}

// Call is the outcome of a CALL: the NOTICEs it sent and its error.
type Call struct {
	Notices []*pgconn.Notice
	Err     error
	Elapsed time.Duration
}

// Messages are the notice texts, one per line.
func (c Call) Messages() string {
	var b strings.Builder
	for _, n := range c.Notices {
		fmt.Fprintf(&b, "%s: %s\n", n.Severity, n.Message)
	}
	return b.String()
}

// Call runs a statement (a CALL) on the node, collecting its NOTICEs.
// onNotice, if set, sees each NOTICE as it arrives.
func (n *Node) Call(ctx context.Context, sql string, args ...any) Call {
	var mu sync.Mutex
	var res Call
	// A cancelled add_node rolls back before it returns: wait for it, as
	// the zodan CLI does.
	conn, err := dbconn.Connect(ctx, n.DSN(), dbconn.Options{ApplicationName: "spocktest call", CancelGrace: 10 * time.Minute, OnNotice: func(nt *pgconn.Notice) {
		mu.Lock()
		res.Notices = append(res.Notices, nt)
		mu.Unlock()
	}})
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))
	start := time.Now()
	_, res.Err = conn.Exec(ctx, sql, args...)
	res.Elapsed = time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	res.Notices = slices.Clone(res.Notices)
	return res
}

// AddNode runs spock.add_node on n (the new node) with src as the source.
func (n *Node) AddNode(ctx context.Context, src *Node, extra ...string) Call {
	args := []any{src.Name, src.DSN(), n.Name, n.DSN()}
	sql := "CALL spock.add_node(src_node_name => $1, src_dsn => $2, new_node_name => $3, new_node_dsn => $4"
	for _, e := range extra {
		sql += ", " + e
	}
	return n.Call(ctx, sql+")", args...)
}

// Cluster is a set of nodes that replicate with each other.
type Cluster struct {
	BinDir string
	Nodes  []*Node
	// SetupCrashes holds the server log lines of a node crash that made
	// an earlier attempt to build this cluster fail (see NewMeshWith).
	SetupCrashes []string
}

// Get returns the node called name.
func (c *Cluster) Get(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Destroy stops and removes every node.
func (c *Cluster) Destroy() {
	for _, n := range c.Nodes {
		n.Cluster.Destroy()
	}
}

// StartNodes starts unregistered nodes named names, in parallel.
func StartNodes(ctx context.Context, binDir string, names ...string) ([]*Node, error) {
	return StartNodesWith(ctx, binDir, NodeOptions{}, names...)
}

// StartNodesWith is StartNodes with options for every node.
func StartNodesWith(ctx context.Context, binDir string, opts NodeOptions, names ...string) ([]*Node, error) {
	nodes := make([]*Node, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = NewNodeWith(ctx, binDir, name, opts)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, n := range nodes {
			if n != nil {
				n.Cluster.Destroy()
			}
		}
		return nil, err
	}
	return nodes, nil
}

// NewMesh starts len(names) nodes and connects every pair both ways, as a
// DBA would build a cluster by hand, then waits until every subscription
// replicates.
func NewMesh(ctx context.Context, binDir string, names ...string) (*Cluster, error) {
	return NewMeshWith(ctx, binDir, NodeOptions{}, names...)
}

// NewMeshWith is NewMesh with options for every node.
//
// A cluster whose build fails because a server process crashed (the log
// says "terminated by signal" or PANIC, and the node restarts in recovery
// mode) is built once more from scratch: that is Spock crashing while the
// harness creates its subscriptions, before any test code runs, not what a
// test examines. The retry is recorded in SetupCrashes for the test to log;
// a second failure is returned with the crash lines.
func NewMeshWith(ctx context.Context, binDir string, opts NodeOptions, names ...string) (*Cluster, error) {
	c, crashes, err := buildMesh(ctx, binDir, opts, names)
	if err == nil || len(crashes) == 0 {
		return c, err
	}
	c, again, err := buildMesh(ctx, binDir, opts, names)
	if err != nil {
		return nil, fmt.Errorf("%w (a node crashed while the cluster was built, twice: %s)", err, strings.Join(append(crashes, again...), "; "))
	}
	c.SetupCrashes = crashes
	return c, nil
}

func buildMesh(ctx context.Context, binDir string, opts NodeOptions, names []string) (*Cluster, []string, error) {
	nodes, err := StartNodesWith(ctx, binDir, opts, names...)
	if err != nil {
		return nil, nil, err
	}
	c := &Cluster{BinDir: binDir, Nodes: nodes}
	fail := func(err error) (*Cluster, []string, error) {
		crashes := c.crashLines()
		c.Destroy()
		return nil, crashes, err
	}
	for _, n := range nodes {
		if err := n.Register(ctx); err != nil {
			return fail(err)
		}
	}
	for _, n := range nodes {
		for _, p := range nodes {
			if n != p {
				if err := n.Subscribe(ctx, p); err != nil {
					return fail(err)
				}
			}
		}
	}
	if err := c.WaitReplicating(ctx, 2*time.Minute); err != nil {
		return fail(err)
	}
	return c, nil, nil
}

// crashLines returns the server log lines, node by node, that report a
// crashed server process.
func (c *Cluster) crashLines() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Cluster.CrashLines()...)
	}
	return out
}

// WaitReplicating polls until every subscription on every node is
// replicating (see NotReplicating). A node that is recovering from a
// crash refuses connections for a moment; that is a state to wait out,
// not an answer.
func (c *Cluster) WaitReplicating(ctx context.Context, limit time.Duration) error {
	return c.WaitReplicatingExcept(ctx, limit, nil)
}

// WaitReplicatingExcept is WaitReplicating ignoring the subscriptions
// whose name ignore accepts (nil: none), such as what a failed join left
// behind until the next one cleans it up.
func (c *Cluster) WaitReplicatingExcept(ctx context.Context, limit time.Duration, ignore func(sub string) bool) error {
	return Poll(ctx, limit, func() (bool, string, error) {
		for _, n := range c.Nodes {
			bad, err := c.NotReplicating(ctx, n)
			if ignore != nil {
				bad = slices.DeleteFunc(bad, func(s string) bool { return ignore(strings.Fields(s)[0]) })
			}
			if recovering(err) {
				return false, n.Name + ": " + err.Error(), nil
			}
			if err != nil || len(bad) > 0 {
				return false, n.Name + ": " + strings.Join(bad, ", "), err
			}
		}
		return true, "", nil
	})
}

// recovering tells whether err is a server's refusal while it starts up
// or recovers from a crash (SQLSTATE 57P03, "the database system is in
// recovery mode" or "not yet accepting connections").
func recovering(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "57P03"
}

// NotReplicating lists n's subscriptions that do not replicate, as "name
// status". A subscription Spock 5.0 calls "down" while its provider (a
// node of c) streams its slot to it replicates: sub_show_status() looked
// at a stale worker entry ahead of the running worker. zodan's procedures
// make the same correction (zodan_correct_sub_status).
func (c *Cluster) NotReplicating(ctx context.Context, n *Node) ([]string, error) {
	rows, err := QueryValue[[][]string](ctx, n, `SELECT coalesce(array_agg(ARRAY[st.subscription_name, st.status,
	        o.node_name, s.sub_slot_name, (s.sub_enabled AND ss.sync_status = 'r')::text] ORDER BY st.subscription_name), '{}')
	    FROM spock.sub_show_status() st
	    JOIN spock.subscription s ON s.sub_name = st.subscription_name
	    JOIN spock.node o ON o.node_id = s.sub_origin
	    LEFT JOIN spock.local_sync_status ss ON ss.sync_subid = s.sub_id AND ss.sync_nspname IS NULL
	   WHERE st.status <> 'replicating'`)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, r := range rows {
		name, status, provider, slot, ready := r[0], r[1], r[2], r[3], r[4] == "true"
		if p := c.Get(provider); status == "down" && ready && p != nil {
			active, err := QueryValue[bool](ctx, p, `SELECT coalesce(bool_or(active), false)
			    FROM pg_replication_slots WHERE slot_name = $1`, slot)
			if err != nil {
				return nil, err
			}
			if active {
				continue
			}
		}
		bad = append(bad, name+" "+status)
	}
	return bad, nil
}

// Poll calls check until it reports done, an error, or limit passes; the
// error then says what check last saw.
func Poll(ctx context.Context, limit time.Duration, check func() (done bool, state string, err error)) error {
	deadline := time.Now().Add(limit)
	delay := 20 * time.Millisecond
	var state string
	for {
		done, s, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		state = s
		if time.Now().After(deadline) {
			return fmt.Errorf("still not done after %s: %s", limit, state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// WaitForRelation polls until relation exists on every one of nodes: DDL
// run on one node reaches the others through AutoDDL, asynchronously.
func WaitForRelation(ctx context.Context, nodes []*Node, relation string, limit time.Duration) error {
	return Poll(ctx, limit, func() (bool, string, error) {
		for _, n := range nodes {
			ok, err := QueryValue[bool](ctx, n, `SELECT to_regclass($1) IS NOT NULL`, relation)
			if err != nil || !ok {
				return false, relation + " is not on " + n.Name + " yet", err
			}
		}
		return true, "", nil
	})
}
