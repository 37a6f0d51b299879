// Package zodancli is the zodan command: the operator's front end to the
// add_node, remove_node and health_check procedures. It takes the flags
// of upstream's zodan.py and zodremove.py, installs the procedures on the
// node it connects to when they are missing or older than this build,
// runs them with CALL and shows the server's progress NOTICEs as they
// arrive, as text or as JSON lines.
package zodancli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/cliexit"
	"github.com/zodan-project/zodan/internal/dsn"
	"github.com/zodan-project/zodan/internal/install"
)

// Exit codes. Automation relies on them; they are listed in --help. All
// but 3 are zodan-install's too (internal/cliexit).
const (
	exitOK                = cliexit.OK
	exitFailed            = cliexit.Failed // the operation failed, or could not start
	exitUsage             = cliexit.Usage
	exitHealthCheckFailed = 3
	exitCancelled         = cliexit.Cancelled // as a shell reports a process ended by SIGINT
)

// Main runs the command with args (args[0] is the program name) and
// returns the process exit code. SIGINT and SIGTERM cancel the running
// operation on the server.
//
// A cancelled add_node rolls itself back before the CALL returns, so the
// first signal cancels and then waits for that (up to cancelGrace); a
// second one quits at once, leaving the rollback to the next run.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		cancel()
		if _, ok := <-sigs; ok {
			fmt.Fprintln(stderr, "zodan: interrupted again: quitting without waiting for the server. "+
				"If it was rolling back, running the same add-node again (or remove-node) finishes the cleanup.")
			os.Exit(exitCancelled)
		}
	}()
	return run(ctx, args, stdout, stderr)
}

// cancelGrace is how long zodan waits, once it has asked the server to
// cancel, for the procedure to roll back and return.
const cancelGrace = 30 * time.Minute

// run is Main under a context of the caller's: cancelling ctx is what a
// signal does.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Every byte zodan prints passes a filter that knows the secrets of
	// the DSNs it was given: the procedures and Mask hide passwords they
	// can recognise, this hides them wherever a server quoted them.
	r := dsn.NewRedactor(secretSources(args)...)
	stdout, stderr = dsn.RedactingWriter(stdout, r), dsn.RedactingWriter(stderr, r)
	err := NewApp(stdout, stderr).RunContext(ctx, args)
	return report(err, args, stdout, stderr)
}

// secretSources are the command-line values that may be connection
// strings ("--flag=value" counts as its value), and the password libpq
// would take from PGPASSWORD.
func secretSources(args []string) []string {
	var out []string
	for _, a := range args {
		out = append(out, a)
		if strings.HasPrefix(a, "-") {
			if _, v, ok := strings.Cut(a, "="); ok {
				out = append(out, v)
			}
		}
	}
	if pw := os.Getenv("PGPASSWORD"); pw != "" {
		out = append(out, "password='"+strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)+"'")
	}
	return out
}

// NewApp builds the command; tests run it in-process with their own
// writers.
func NewApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "zodan",
		Usage:   "add nodes to and remove nodes from a pgEdge Spock cluster, online",
		Version: fmt.Sprintf("%s (procedures version %d)", zodan.Version, install.Latest()),
		Description: `zodan runs the add_node, remove_node and health_check procedures on a node
with CALL and shows their progress as it happens. It installs the procedures
on that node first when they are missing or older than this zodan
(--no-install stops instead). Flags are those of upstream's zodan.py and
zodremove.py; DSNs may also come from ZODAN_* environment variables, and
PG* variables, ~/.pgpass and service files apply when zodan connects.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 health check
failed, 130 ` + cliexit.CancelledWord + ` (Ctrl-C or SIGTERM).

Examples:
   zodan health-check --src-node-name n1 --src-dsn 'host=db1 dbname=app' \
       --new-node-name n4 --new-node-dsn 'host=db4 dbname=app'
   zodan add-node --src-node-name n1 --src-dsn 'host=db1 dbname=app' \
       --new-node-name n4 --new-node-dsn 'host=db4 dbname=app'
   zodan remove-node --target-node-name n4 --target-dsn 'host=db4 dbname=app'`,
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // report() handles errors
		OnUsageError:         onUsageError,
		Action:               noCommand,
		Commands: []*cli.Command{
			addNodeCommand(),
			healthCheckCommand(),
			removeNodeCommand(),
			completionCommand(),
		},
	}
}

// noCommand runs when no known command was given. Without it urfave/cli
// answers an unknown command with its help's "No help topic" error, whose
// exit code 3 would read as a failed health check.
func noCommand(c *cli.Context) error {
	if c.Args().Present() {
		return usageError("unknown command %s; the commands are add-node, health-check, remove-node and completion", quoteArg(c.Args().First()))
	}
	_ = cli.ShowAppHelp(c)
	return usageError("no command given")
}
