// Package pgtest starts throwaway PostgreSQL clusters for tests.
//
// PostgreSQL refuses to run as root, and CI runs as root, so when the test
// process is root every initdb/pg_ctl/postgres process runs as the
// unprivileged "postgres" user (override with ZODAN_TEST_OS_USER) and the
// cluster's directory is handed to that user. Each cluster listens on
// 127.0.0.1 on a free port, so tests exercise TCP and password
// authentication exactly as a DBA's client would.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the bootstrap superuser of every test cluster.
const Superuser = "postgres"

// Options describe the cluster to start. The zero value is a plain
// PostgreSQL from DefaultBinDir with trust authentication.
type Options struct {
	// BinDir holds initdb, pg_ctl and postgres. Default: DefaultBinDir().
	BinDir string
	// Password, when set, is the superuser's password and every TCP
	// connection must authenticate with scram-sha-256.
	Password string
	// Settings are appended to postgresql.conf, one "name = value" each.
	Settings map[string]string
	// Name labels the cluster in logs and directory names (e.g. "n1").
	Name string
}

// Cluster is one running PostgreSQL instance.
type Cluster struct {
	Name    string
	Dir     string // owned by the OS user the server runs as
	DataDir string
	LogFile string
	Port    int
	binDir  string
	opts    Options

	mu      sync.Mutex
	running bool
}

// DefaultBinDir is where the test clusters' binaries come from: the
// ZODAN_PG_BINDIR environment variable, else Debian's PostgreSQL 15.
func DefaultBinDir() string {
	if d := os.Getenv("ZODAN_PG_BINDIR"); d != "" {
		return d
	}
	return "/usr/lib/postgresql/15/bin"
}

// Start initialises and starts a cluster; t.Cleanup reports any server
// process that crashed (CrashReport), stops it and removes its directory.
// A cluster that cannot start fails the test with the tail of the server
// log.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if report := c.CrashReport(); report != "" {
			t.Logf("pgtest: a server process of %s crashed during this test:\n%s", c.Name, report)
		}
		if t.Failed() && os.Getenv("ZODAN_TEST_KEEP") != "" {
			t.Logf("pgtest: keeping %s (ZODAN_TEST_KEEP is set)", c.Dir)
			_ = c.Stop()
			return
		}
		_ = c.Destroy()
	})
	if err := c.Start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

// New initialises a cluster without starting it. The caller owns it and
// must call Destroy.
func New(opts Options) (*Cluster, error) {
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	if opts.Name == "" {
		opts.Name = "pg"
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "initdb")); err != nil {
		return nil, fmt.Errorf("no initdb in %s (install postgresql-15, or set ZODAN_PG_BINDIR): %w", opts.BinDir, err)
	}
	dir, err := os.MkdirTemp("", "zodan-"+opts.Name+"-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: opts.Name, Dir: dir, DataDir: filepath.Join(dir, "data"),
		LogFile: filepath.Join(dir, "server.log"), binDir: opts.BinDir, opts: opts}
	if err := chownToServerUser(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.initdb(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) initdb() error {
	args := []string{"-D", c.DataDir, "-U", Superuser, "--no-sync", "-E", "UTF8", "--locale=C"}
	auth := "trust"
	if c.opts.Password != "" {
		pwfile := filepath.Join(c.Dir, "pwfile")
		if err := os.WriteFile(pwfile, []byte(c.opts.Password+"\n"), 0o600); err != nil {
			return err
		}
		if err := chownToServerUser(pwfile); err != nil {
			return err
		}
		defer os.Remove(pwfile)
		args = append(args, "--pwfile", pwfile)
		auth = "scram-sha-256"
	}
	// Local (Unix socket) connections stay trusted so the harness itself
	// can always get in; TCP, which is what zodan and dblink use, follows
	// the requested method.
	args = append(args, "--auth-local=trust", "--auth-host="+auth)
	if out, err := c.run("initdb", args...); err != nil {
		return fmt.Errorf("initdb for %s failed: %w\n%s", c.Name, err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Port = port
	var conf strings.Builder
	fmt.Fprintf(&conf, "\n# pgtest\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n", port, c.Dir)
	conf.WriteString("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
	conf.WriteString("log_line_prefix = '%m [%p] %q%a '\nlog_min_messages = info\n")
	for k, v := range c.opts.Settings {
		fmt.Fprintf(&conf, "%s = %s\n", k, v)
	}
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(conf.String())
	return err
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	out, err := c.run("pg_ctl", "-D", c.DataDir, "-l", c.LogFile, "-c", "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("starting %s failed: %w\n%s\n%s", c.Name, err, out, c.LogTail(30))
	}
	c.running = true
	return nil
}

// Stop shuts the server down fast (mode "fast": sessions are disconnected,
// nothing is lost).
func (c *Cluster) Stop() error { return c.stop("fast") }

// Kill stops the server without a clean shutdown, as a crash would.
func (c *Cluster) Kill() error { return c.stop("immediate") }

func (c *Cluster) stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	out, err := c.run("pg_ctl", "-D", c.DataDir, "-m", mode, "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("stopping %s failed: %w\n%s", c.Name, err, out)
	}
	c.running = false
	return nil
}

// Restart stops (fast) and starts the server again on the same port.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.Start()
}

// Destroy stops the server and removes its directory.
func (c *Cluster) Destroy() error {
	err := c.stop("immediate")
	if rmErr := os.RemoveAll(c.Dir); err == nil {
		err = rmErr
	}
	return err
}

// DSN is a keyword/value connection string for database db on this
// cluster, with the superuser's password when the cluster has one.
func (c *Cluster) DSN(db string) string {
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s", c.Port, Superuser, db)
	if c.opts.Password != "" {
		pw := c.opts.Password
		if strings.ContainsAny(pw, " \t\n\\'") {
			// Quoted as libpq reads it.
			pw = "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "'"
		}
		dsn += " password=" + pw
	}
	return dsn
}

// Password is the superuser's password ("" with trust authentication).
func (c *Cluster) Password() string { return c.opts.Password }

// DSNWithoutPassword is DSN without the password, for output that must be
// compared with what a redacting tool prints.
func (c *Cluster) DSNWithoutPassword(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s", c.Port, Superuser, db)
}

// Connect opens a superuser connection to db; t.Cleanup closes it.
func (c *Cluster) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		t.Fatalf("pgtest: connect to %s/%s: %v", c.Name, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs SQL as the superuser on db and fails the test on error.
func (c *Cluster) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		t.Fatalf("pgtest: connect to %s/%s: %v", c.Name, db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: on %s/%s: %v\nSQL: %s", c.Name, db, err, sql)
	}
}

// CreateDatabase creates a fresh database and returns its name.
func (c *Cluster) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	c.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0")
	return name
}

// ReadLog returns the whole server log.
func (c *Cluster) ReadLog() string {
	b, _ := os.ReadFile(c.LogFile)
	return string(b)
}

// LogTail returns the last n lines of the server log.
func (c *Cluster) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(c.ReadLog(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run executes one of the cluster's binaries as the server's OS user.
func (c *Cluster) run(bin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.binDir, bin), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := runAsServerUser(cmd); err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func serverUser() (*user.User, error) {
	name := os.Getenv("ZODAN_TEST_OS_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("tests run as root, so PostgreSQL must run as an unprivileged user, and %q does not exist (create it, or set ZODAN_TEST_OS_USER): %w", name, err)
	}
	return u, nil
}

// serverIDs are the uid and gid the servers run as.
func serverIDs() (uid, gid int, home, name string, err error) {
	u, err := serverUser()
	if err != nil {
		return 0, 0, "", "", err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, u.HomeDir, u.Username, nil
}

func runAsServerUser(cmd *exec.Cmd) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, home, name, err := serverIDs()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = append(cmd.Env, "HOME="+home, "USER="+name)
	return nil
}

func chownToServerUser(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, _, _, err := serverIDs()
	if err != nil {
		return err
	}
	return os.Chown(path, uid, gid)
}

var portMu sync.Mutex
var portsGiven = map[int]bool{}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Ports handed
// out earlier in this process are never handed out again, so two clusters
// started back to back cannot be given the same one.
func freePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port, nil
		}
	}
	return 0, errors.New("pgtest: no free port found")
}
