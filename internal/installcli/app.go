// Package installcli is the zodan-install command: it renders the
// procedures and installs, upgrades, downgrades, inspects and removes them
// on one node, several, or every node of a cluster.
package installcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/cliexit"
	"github.com/zodan-project/zodan/internal/cluster"
	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/render"
)

// Main runs the command with args (args[0] is the program name) and
// returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := NewApp(stdout, stderr).RunContext(ctx, args)
	return exitCode(err, stderr)
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return cliexit.OK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		cliexit.Print(stderr, prog, ec.Error())
		return ec.ExitCode()
	}
	if errors.Is(err, context.Canceled) {
		cliexit.Print(stderr, prog, cliexit.CancelledWord)
		return cliexit.Cancelled
	}
	// urfave/cli reports other usage problems (a missing required flag)
	// as plain errors.
	cliexit.Print(stderr, prog, cliexit.Usagef("%s", dbconn.Describe(err)).Error())
	return cliexit.Usage
}

const prog = "zodan-install"

func usageError(format string, a ...any) error { return cliexit.Usagef(format, a...) }

func failed(format string, a ...any) error { return cliexit.Failedf(format, a...) }

// Flags are built per app: urfave/cli writes parsed values and
// environment defaults into flag values, so shared ones would leak between
// runs (and race in parallel tests).
func schemaFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "schema",
		Value: render.DefaultSchema,
		Usage: "schema that holds the procedures; only \"spock\" works with Spock, other (existing) schemas are for testing the installer on plain PostgreSQL",
	}
}

func dsnFlag() cli.Flag {
	return &cli.StringSliceFlag{
		Name:  "dsn",
		Usage: "node to work on, as a libpq DSN (keyword/value or URI; PG* variables, .pgpass and service files apply); repeat for several nodes; default: the PG* environment",
	}
}

func clusterFlag() cli.Flag {
	return &cli.BoolFlag{
		Name:  "cluster",
		Usage: "work on every node of the cluster of the (first) --dsn node, as listed in its spock.node_interface",
	}
}

func dryRunFlag() cli.Flag {
	return &cli.BoolFlag{
		Name:  "dry-run",
		Usage: "print the SQL each node would run, and change nothing",
	}
}

// NewApp builds the command; tests run it in-process with their own
// writers.
func NewApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "zodan-install",
		Usage:   "install zodan's add_node, remove_node and health_check procedures on Spock nodes",
		Version: fmt.Sprintf("%s (installs version %d; releases: %s)", zodan.Version, install.Latest(), install.ReleaseList()),
		Description: `Installs the procedures into the spock schema of each node, versioned
(tern migrations in <schema>.zodan_schema_version), under an advisory lock.
Every release's procedures are frozen; this build knows releases
` + install.ReleaseList() + `, and
upgrades or downgrades a node to any of them (--to takes a release or a
version number).

Exit codes: 0 success, 1 failed on at least one node, 2 usage error,
130 ` + cliexit.CancelledWord + ` (Ctrl-C or SIGTERM).

Examples:
   zodan-install install --dsn 'host=db1 dbname=app' --cluster
   zodan-install status --dsn 'host=db1 dbname=app' --cluster
   zodan-install render --out zodan.sql     # for psql: \i zodan.sql`,
		Writer:                 stdout,
		ErrWriter:              stderr,
		HideHelpCommand:        true,
		UseShortOptionHandling: true,
		EnableBashCompletion:   true,
		ExitErrHandler:         func(*cli.Context, error) {}, // Main reports errors
		OnUsageError:           cliexit.OnUsageError,
		Action:                 noCommand,
		Commands: withUsageErrors([]*cli.Command{
			renderCommand(),
			installCommand(),
			statusCommand(),
			migrateCommand("downgrade", "move the nodes to an older version (down migrations)", false),
			migrateCommand("upgrade", "move the nodes to a given newer version (up migrations); install goes to the newest", true),
			uninstallCommand(),
		}),
	}
}

// withUsageErrors makes each command answer a flag it cannot parse with
// one line on stderr, as zodan does, not with its help.
func withUsageErrors(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.OnUsageError = cliexit.OnUsageError
	}
	return cmds
}

// noCommand runs when no known command was given: the help, or a usage
// error for an unknown command (urfave/cli's own answer exits 3).
func noCommand(c *cli.Context) error {
	if c.Args().Present() {
		var names []string
		for _, cmd := range c.App.VisibleCommands() {
			names = append(names, cmd.Name)
		}
		return usageError("unknown command %q; the commands are %s", c.Args().First(), strings.Join(names, ", "))
	}
	return cli.ShowAppHelp(c)
}

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:  "render",
		Usage: "write the standalone SQL script a DBA runs with psql (\\i)",
		Description: `The script installs zodan where it is missing, upgrades an older zodan (keeping
its journal), reinstalls the procedures where this version is installed, and
refuses a newer one; zodan-install can upgrade or remove it later.

Example:
   zodan-install render --out zodan.sql && psql -d app -f zodan.sql`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "file to write (default: standard output)"},
			schemaFlag(),
			&cli.StringFlag{Name: "dblink-schema", Value: render.DefaultDblink, Usage: "schema of the dblink extension on the nodes"},
			&cli.IntFlag{Name: "pg-version", Value: 15, Usage: "PostgreSQL major version of the nodes"},
			&cli.StringFlag{Name: "progress-column", Value: render.DefaultFeatures().ProgressLSN, Usage: "spock.progress column with the last applied LSN (remote_lsn in Spock 5.0)"},
		},
		Action: func(c *cli.Context) error {
			ro := render.Options{
				Schema: c.String("schema"),
				Dblink: c.String("dblink-schema"),
				Features: render.Features{
					ServerVersionNum: c.Int("pg-version") * 10000,
					ProgressLSN:      c.String("progress-column"),
				},
			}
			if _, err := ro.Data(); err != nil {
				return usageError("%v", err)
			}
			script, err := install.Script(ro)
			if err != nil {
				return failed("%v", err)
			}
			if out := c.String("out"); out != "" {
				if err := os.WriteFile(out, []byte(script), 0o644); err != nil {
					return failed("%v", err)
				}
				fmt.Fprintf(c.App.Writer, "wrote %s (zodan %s, version %d)\n", out, zodan.Version, install.Latest())
				return nil
			}
			_, err = io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

func nodeFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{dsnFlag(), clusterFlag(), schemaFlag()}, extra...)
}

// targets resolves --dsn and --cluster into the nodes to work on.
func targets(c *cli.Context) ([]cluster.Node, error) {
	if c.Args().Present() {
		return nil, usageError("unexpected argument %q (flags go before arguments; give nodes with --dsn)", c.Args().First())
	}
	dsns := c.StringSlice("dsn")
	if len(dsns) == 0 {
		dsns = []string{""} // libpq defaults: PGHOST, PGDATABASE, ...
	}
	if !c.Bool("cluster") {
		return cluster.FromDSNs(dsns), nil
	}
	if len(dsns) > 1 {
		return nil, usageError("--cluster takes one --dsn (any node of the cluster), got %d", len(dsns))
	}
	nodes, err := cluster.Discover(c.Context, dsns[0])
	if err != nil {
		return nil, failed("finding the cluster's nodes: %s", dbconn.Describe(err))
	}
	return nodes, nil
}

// onEachNode runs work on every target at once and prints one line per
// node, in order. It fails (exit 1) when any node failed, naming them.
func onEachNode(c *cli.Context, work func(context.Context, *install.Installer, cluster.Node) (string, error)) error {
	nodes, err := targets(c)
	if err != nil {
		return err
	}
	schema := c.String("schema")
	if err := render.ValidSchemaName(schema); err != nil {
		return usageError("--schema: %v", err)
	}
	// The procedures' default wait limit is fixed at render time so that
	// every node runs byte-identical code; DBAs change it at run time
	// with the spock.sync_timeout setting (e.g. ALTER DATABASE ... SET).
	ro := render.Options{}
	var failed []string
	for o := range cluster.Each(c.Context, nodes, func(ctx context.Context, n cluster.Node) (string, error) {
		conn, err := dbconn.Connect(ctx, n.DSN, dbconn.Options{ApplicationName: "zodan-install"})
		if err != nil {
			return "", err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		in, err := install.New(conn, schema, ro)
		if err != nil {
			return "", err
		}
		return work(ctx, in, n)
	}) {
		if o.Err != nil {
			failed = append(failed, o.Node.Name)
			fmt.Fprintf(c.App.Writer, "%s: FAILED: %s\n", o.Node.Label(), indent(dbconn.Describe(o.Err)))
			continue
		}
		fmt.Fprintf(c.App.Writer, "%s: %s\n", o.Node.Label(), o.Result)
	}
	if c.Context.Err() != nil {
		return c.Context.Err()
	}
	if len(failed) > 0 {
		return cliexit.Failedf("failed on %d of %d nodes: %s", len(failed), len(nodes), strings.Join(failed, ", "))
	}
	return nil
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

func describeChange(verb string, r install.Result) string {
	switch {
	case r.Repaired:
		return fmt.Sprintf("version %d (zodan %s), procedures reinstalled: they differed from zodan %s's as released", r.To, r.ToRelease, r.ToRelease)
	case r.From == r.To:
		return fmt.Sprintf("version %d%s, nothing to do", r.To, release(r.ToRelease))
	default:
		return fmt.Sprintf("%s version %d%s -> %d%s", verb, r.From, release(r.FromRelease), r.To, release(r.ToRelease))
	}
}

func release(r string) string {
	if r == "" {
		return ""
	}
	return " (zodan " + r + ")"
}

// printPlan prints what a dry run found for one node.
func printPlan(steps []install.Step) string {
	if len(steps) == 0 {
		return "nothing to do"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "would run %d step(s):", len(steps))
	for _, s := range steps {
		fmt.Fprintf(&b, "\n-- %s\n%s\n", s.Title, strings.TrimSpace(s.SQL))
	}
	return b.String()
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install or upgrade to this build's version (a rerun converges)",
		Description: `Examples:
   zodan-install install --dsn 'host=db1 dbname=app' --dsn 'host=db2 dbname=app'
   zodan-install install --dsn 'postgresql://admin@db1/app' --cluster --dry-run`,
		Flags: nodeFlags(dryRunFlag()),
		Action: func(c *cli.Context) error {
			return onEachNode(c, func(ctx context.Context, in *install.Installer, _ cluster.Node) (string, error) {
				if c.Bool("dry-run") {
					steps, _, err := in.Plan(ctx, install.Latest())
					return printPlan(steps), err
				}
				r, err := in.Install(ctx)
				return describeChange("installed", r), err
			})
		},
	}
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "remove everything zodan-install installed, and nothing else",
		Description: `Example:
   zodan-install uninstall --dsn 'host=db1 dbname=app' --cluster`,
		Flags: nodeFlags(dryRunFlag()),
		Action: func(c *cli.Context) error {
			return onEachNode(c, func(ctx context.Context, in *install.Installer, _ cluster.Node) (string, error) {
				if c.Bool("dry-run") {
					steps, _, err := in.Plan(ctx, 0)
					return printPlan(steps), err
				}
				r, err := in.Uninstall(ctx)
				if err == nil && r.From == 0 {
					return "not installed, nothing to do", nil
				}
				return fmt.Sprintf("uninstalled version %d%s", r.From, release(r.FromRelease)), err
			})
		},
	}
}

func migrateCommand(name, usage string, up bool) *cli.Command {
	example := install.Releases()[0].Version
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Description: fmt.Sprintf(`--to takes a release (%s) or a version number (0 removes
everything; 1 is the operation journal without procedures). A node already
at that version whose procedures differ from its release's gets them
reinstalled.

Example:
   zodan-install %s --to %s --dsn 'host=db1 dbname=app' --cluster`, install.ReleaseList(), name, example),
		Flags: nodeFlags(&cli.StringFlag{Name: "to", Required: true, Usage: "release (" + example + ") or version number to move to (0 removes everything)"}, dryRunFlag()),
		Action: func(c *cli.Context) error {
			to, err := parseTo(c.String("to"))
			if err != nil {
				return err
			}
			return onEachNode(c, func(ctx context.Context, in *install.Installer, _ cluster.Node) (string, error) {
				st, err := in.Inspect(ctx)
				if err != nil {
					return "", err
				}
				if err := st.NotNewer(); err != nil {
					return "", err
				}
				if up && to < st.Version || !up && to > st.Version {
					return "", fmt.Errorf("is at version %d; use %s to go to %d", st.Version, map[bool]string{true: "downgrade", false: "upgrade or install"}[up], to)
				}
				if c.Bool("dry-run") {
					steps, _, err := in.Plan(ctx, to)
					return printPlan(steps), err
				}
				r, err := in.MigrateTo(ctx, to)
				return describeChange(map[bool]string{true: "upgraded", false: "downgraded"}[up], r), err
			})
		},
	}
}

// parseTo reads --to: a release ("1.0.0") or a version number.
func parseTo(s string) (int32, error) {
	if r, ok := install.FindRelease(s); ok {
		return r.Migration, nil
	}
	known := fmt.Sprintf("this build knows versions 0 to %d and releases %s", install.Latest(), install.ReleaseList())
	n, err := strconv.ParseInt(s, 10, 32)
	switch {
	case err != nil && strings.Contains(s, "."):
		return 0, usageError("--to %s: no such release; %s", s, known)
	case err != nil:
		return 0, usageError("--to %q is neither a release nor a version number; %s", s, known)
	case n < 0 || n > int64(install.Latest()):
		return 0, usageError("--to %d: %s", n, known)
	}
	return int32(n), nil
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the installed version on each node, which release its procedures are, and whether they were changed",
		Description: `For each node: its version, the release zodan_install records, and whether
its procedures are exactly that release's as released (every release this
build knows is evaluated for the node and compared with the recorded
checksum, and every routine with the checksum recorded at install). Exits 1
when a node cannot be read or its procedures differ from what its version
should be (edited or dropped by hand, another release's, or installed by
another build).

Example:
   zodan-install status --dsn 'host=db1 dbname=app' --cluster`,
		Flags: nodeFlags(),
		Action: func(c *cli.Context) error {
			return onEachNode(c, func(ctx context.Context, in *install.Installer, _ cluster.Node) (string, error) {
				st, err := in.Inspect(ctx)
				if err != nil {
					return "", err
				}
				spock := "no spock extension"
				if st.SpockVersion != "" {
					spock = "Spock " + st.SpockVersion
				}
				if st.Version == 0 {
					return fmt.Sprintf("not installed (this build installs version %d; PostgreSQL %s, %s)", install.Latest(), st.ServerVersion, spock), nil
				}
				line := fmt.Sprintf("version %d%s", st.Version, release(st.Release))
				check, err := in.CheckCode(st)
				if errors.Is(err, install.ErrNewerVersionInstalled) {
					return fmt.Sprintf("%s, newer than this build (version %d, zodan %s): its procedures are not checked; use the zodan-install of that release",
						line, install.Latest(), zodan.Version), nil
				}
				if err != nil {
					return "", err
				}
				newest := ""
				if st.Version < install.Latest() {
					newest = fmt.Sprintf("; this build installs version %d (zodan %s)", install.Latest(), zodan.Version)
				}
				switch {
				case check.Expected == nil:
					return line + ", the operation journal without procedures" + newest, nil
				case !check.OK():
					repair := "zodan-install install repairs them"
					if st.Version < install.Latest() {
						repair = fmt.Sprintf("zodan-install upgrade --to %s repairs them (install moves to zodan %s)", check.Expected.Version, zodan.Version)
					}
					return "", fmt.Errorf("%s, but its procedures differ: %s; %s", line, check.Problem(), repair)
				}
				return line + ", procedures exactly as released in zodan " + check.Expected.Version + newest, nil
			})
		},
	}
}
