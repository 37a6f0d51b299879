package zodancli

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/dsn"
)

func addNodeCommand() *cli.Command {
	return &cli.Command{
		Name:    "add-node",
		Aliases: []string{"add_node"},
		Usage:   "join a new node to the cluster of the source node, without stopping writes",
		Description: `Connects to the new node and runs add_node there (installing the procedures
first if needed). On failure or Ctrl-C, add_node rolls the join back on every
reachable node; its error says what was cleaned up and what, if anything, is
left to run by hand. Re-running the same command then starts over.

Example:
   zodan add-node --src-node-name n1 --src-dsn 'host=db1 dbname=app user=admin' \
       --new-node-name n4 --new-node-dsn 'host=db4 dbname=app user=admin' \
       --new-node-location Paris --new-node-country FR --timeout 30m`,
		Flags:           concatFlags(srcFlags(" (required)"), nodeMetadataFlags(), commonFlags()),
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			s, err := readSettings(c)
			if err != nil {
				return err
			}
			if err := required(c, flagSrcNodeName, flagSrcDSN, flagNewNodeName, flagNewNodeDSN); err != nil {
				return err
			}
			if err := checkNodeInfo(c.String(flagNewNodeInfo)); err != nil {
				return err
			}
			src, node, nodeDSN := c.String(flagSrcNodeName), c.String(flagNewNodeName), c.String(flagNewNodeDSN)
			op := operation{
				proc: "add_node", settings: s, dsn: nodeDSN,
				title: fmt.Sprintf("add_node %s (source %s)", node, src),
				args: []procArg{
					{"src_node_name", "text", src},
					{"src_dsn", "text", c.String(flagSrcDSN)},
					{"new_node_name", "text", node},
					{"new_node_dsn", "text", nodeDSN},
					{"verb", "boolean", s.verbose},
					{"new_node_location", "text", c.String(flagNewNodeLocation)},
					{"new_node_country", "text", c.String(flagNewNodeCountry)},
					{"new_node_info", "jsonb", c.String(flagNewNodeInfo)},
					{"sync_timeout", "interval", intervalArg(s.timeout)},
				},
				afterCancel: func(journal string) string {
					return fmt.Sprintf(`Cancelled. add_node rolls the join back when it is cancelled: the error's DETAIL says what it removed, or what to run where it could not.
SELECT * FROM %s shows the operation.
Running the same "zodan add-node" again cleans up whatever is left and retries; "zodan remove-node --target-node-name %s --target-dsn ..." takes %s out instead.`,
						journal, node, node)
				},
			}
			return runOperation(c, op)
		},
	}
}

func healthCheckCommand() *cli.Command {
	return &cli.Command{
		Name:    "health-check",
		Aliases: []string{"health_check"},
		Usage:   "check that the cluster is ready for add-node (--check-type pre) or that a node joined properly (post)",
		Description: `Connects to the new node when one is given, else to the source node, and
runs health_check there; it changes nothing in the cluster. Every check
prints PASS or FAIL; the command exits 3 when a check failed.

Example:
   zodan health-check --check-type pre --src-node-name n1 --src-dsn 'host=db1 dbname=app' \
       --new-node-name n4 --new-node-dsn 'host=db4 dbname=app'`,
		Flags: concatFlags(
			srcFlags(" (optional: without it the cluster of the source is checked)"),
			[]cli.Flag{&cli.StringFlag{Name: flagCheckType, Value: "pre", Usage: "pre: ready for add-node; post: the new node joined properly"}},
			hidden(nodeMetadataFlags()), // zodan.py's documentation listed them; they change nothing
			commonFlags()),
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			s, err := readSettings(c)
			if err != nil {
				return err
			}
			if err := required(c, flagSrcNodeName, flagSrcDSN); err != nil {
				return err
			}
			checkType := c.String(flagCheckType)
			if checkType != "pre" && checkType != "post" {
				return usageError("--%s must be pre or post, not %q", flagCheckType, checkType)
			}
			src, node, nodeDSN := c.String(flagSrcNodeName), c.String(flagNewNodeName), c.String(flagNewNodeDSN)
			if node == "" && nodeDSN == os.Getenv(envNewNodeDSN) {
				// Exported for add-node; checking the cluster without a
				// new node does not need it.
				nodeDSN = ""
			}
			if (node == "") != (nodeDSN == "") {
				return usageError("give both --%s and --%s, or neither (to check the cluster of the source)", flagNewNodeName, flagNewNodeDSN)
			}
			op := operation{
				proc: "health_check", settings: s, dsn: nodeDSN,
				title: fmt.Sprintf("health_check %s of the cluster of %s", checkType, src),
				args: []procArg{
					{"src_node_name", "text", src},
					{"src_dsn", "text", c.String(flagSrcDSN)},
					{"new_node_name", "text", optional(node)},
					{"new_node_dsn", "text", optional(nodeDSN)},
					{"check_type", "text", checkType},
					{"verb", "boolean", s.verbose},
					{"sync_timeout", "interval", intervalArg(s.timeout)},
				},
				afterCancel: func(string) string {
					return "Cancelled. A health check changes nothing in the cluster: there is nothing to clean up."
				},
			}
			if node != "" {
				op.title = fmt.Sprintf("health_check %s of %s (source %s)", checkType, node, src)
			} else {
				op.dsn = c.String(flagSrcDSN)
			}
			return runOperation(c, op)
		},
	}
}

func removeNodeCommand() *cli.Command {
	return &cli.Command{
		Name:    "remove-node",
		Aliases: []string{"remove_node"},
		Usage:   "take a node out of the cluster; it keeps its data and becomes a plain database",
		Description: `Connects to the node being removed and runs remove_node there, as
zodremove.py did. To remove a node that is down, connect to any remaining
node instead with --run-on-dsn: the target's DSN is then optional (it is
looked up in the cluster), and what cannot be cleaned on the dead node is
listed for when it comes back. Removal is idempotent: re-running it
finishes an interrupted one.

Examples:
   zodan remove-node --target-node-name n4 --target-dsn 'host=db4 dbname=app'
   zodan remove-node --target-node-name n4 --run-on-dsn 'host=db1 dbname=app'`,
		Flags: concatFlags([]cli.Flag{
			&cli.StringFlag{Name: flagTargetNodeName, Usage: "name of the node to remove (required)"},
			&cli.StringFlag{Name: flagTargetDSN, Aliases: []string{"target-node-dsn"}, EnvVars: []string{envTargetDSN},
				Usage: "DSN of the node to remove (required unless --" + flagRunOnDSN + " is given)" + dsnNote},
			&cli.StringFlag{Name: flagRunOnDSN, EnvVars: []string{envRunOnDSN},
				Usage: "DSN of a remaining node to run the removal on, for a target that is down (default: the target itself)"},
		}, commonFlags()),
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			s, err := readSettings(c)
			if err != nil {
				return err
			}
			if err := required(c, flagTargetNodeName); err != nil {
				return err
			}
			node, targetDSN, runOn := c.String(flagTargetNodeName), c.String(flagTargetDSN), c.String(flagRunOnDSN)
			if targetDSN == "" && runOn == "" {
				return usageError("give --%s (or $%s) to run on the node being removed, or --%s (or $%s) to run on a remaining node",
					flagTargetDSN, envTargetDSN, flagRunOnDSN, envRunOnDSN)
			}
			op := operation{
				proc: "remove_node", settings: s, dsn: targetDSN,
				title: fmt.Sprintf("remove_node %s", node),
				args: []procArg{
					{"target_node_name", "text", node},
					{"target_node_dsn", "text", optional(targetDSN)},
					{"verbose_mode", "boolean", s.verbose},
					{"sync_timeout", "interval", intervalArg(s.timeout)},
				},
				afterCancel: func(journal string) string {
					return fmt.Sprintf(`Cancelled. remove_node stops where it was; the error's DETAIL says how far it got.
SELECT * FROM %s shows the operation.
Removal is idempotent: running the same "zodan remove-node" again finishes it.`, journal)
				},
			}
			if runOn != "" {
				op.dsn = runOn
				op.title = fmt.Sprintf("remove_node %s, run on %s", node, dsn.Label(runOn))
			}
			return runOperation(c, op)
		},
	}
}
