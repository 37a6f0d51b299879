package zodancli

import (
	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/render"
)

// Flag names, shared by the commands and their validation.
const (
	flagSrcNodeName     = "src-node-name"
	flagSrcDSN          = "src-dsn"
	flagNewNodeName     = "new-node-name"
	flagNewNodeDSN      = "new-node-dsn"
	flagNewNodeLocation = "new-node-location"
	flagNewNodeCountry  = "new-node-country"
	flagNewNodeInfo     = "new-node-info"
	flagCheckType       = "check-type"
	flagTargetNodeName  = "target-node-name"
	flagTargetDSN       = "target-dsn"
	flagRunOnDSN        = "run-on-dsn"
	flagVerbose         = "verbose"
	flagTimeout         = "timeout"
	flagJSON            = "json"
	flagNoInstall       = "no-install"
	flagSchema          = "schema"
)

// Environment variables that may hold DSNs.
const (
	envSrcDSN     = "ZODAN_SRC_DSN"
	envNewNodeDSN = "ZODAN_NEW_NODE_DSN"
	envTargetDSN  = "ZODAN_TARGET_DSN"
	envRunOnDSN   = "ZODAN_RUN_ON_DSN"
)

// dsnNote is appended to the usage of every DSN flag that the procedure
// receives: the server connects with it too (dblink), in its own
// environment.
const dsnNote = "; the node connects with it too (dblink), so it must work from there"

// Required flags are checked by the commands themselves (see required)
// rather than with urfave/cli's Required, which prints the whole help on
// stdout and returns an error without an exit code.

func srcFlags(usage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagSrcNodeName, Usage: "name of an existing node of the cluster, the source (required)"},
		&cli.StringFlag{Name: flagSrcDSN, EnvVars: []string{envSrcDSN}, Usage: "DSN of the source node (required)" + dsnNote},
		&cli.StringFlag{Name: flagNewNodeName, Usage: "name of the new node" + usage},
		&cli.StringFlag{Name: flagNewNodeDSN, EnvVars: []string{envNewNodeDSN}, Usage: "DSN of the new node" + usage + dsnNote},
	}
}

func nodeMetadataFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagNewNodeLocation, Value: "NY", Usage: "location of the new node, recorded in spock.node"},
		&cli.StringFlag{Name: flagNewNodeCountry, Value: "USA", Usage: "country of the new node, recorded in spock.node"},
		&cli.StringFlag{Name: flagNewNodeInfo, Value: "{}", Usage: "more metadata about the new node, a JSON object"},
	}
}

// commonFlags are on every command that calls a procedure.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: flagVerbose, Aliases: []string{"v"}, Usage: "also show the procedure's detail messages"},
		&cli.DurationFlag{Name: flagTimeout, DefaultText: "spock.sync_timeout, else 10m",
			Usage: "how long a wait may go without progress before the operation fails, e.g. 15m (the procedure's sync_timeout)"},
		&cli.BoolFlag{Name: flagJSON, Usage: "print one JSON object per line on stdout: progress events, then a result"},
		&cli.BoolFlag{Name: flagNoInstall, Usage: "do not install or upgrade the procedures on the node; stop when they are missing or older than this zodan"},
		&cli.StringFlag{Name: flagSchema, Value: render.DefaultSchema, Usage: "schema of the procedures; only \"spock\" works with Spock, others are for tests on plain PostgreSQL"},
	}
}

// hidden keeps flags working but out of --help.
func hidden(flags []cli.Flag) []cli.Flag {
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok {
			sf.Hidden = true
		}
	}
	return flags
}

func concatFlags(groups ...[]cli.Flag) []cli.Flag {
	var all []cli.Flag
	for _, g := range groups {
		all = append(all, g...)
	}
	return all
}
