package zodancli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/render"
)

// readSettings validates the flags every command shares, and rejects
// stray arguments: urfave/cli takes every flag after the first argument
// as an argument too, so a stray word would silently drop the flags that
// follow it.
func readSettings(c *cli.Context) (settings, error) {
	if c.Args().Present() {
		return settings{}, usageError("unexpected argument %s: %s takes only flags, and flags after an argument are ignored", quoteArg(c.Args().First()), c.Command.Name)
	}
	s := settings{
		schema:    c.String(flagSchema),
		json:      c.Bool(flagJSON),
		noInstall: c.Bool(flagNoInstall),
		verbose:   c.Bool(flagVerbose),
	}
	if err := render.ValidSchemaName(s.schema); err != nil {
		return s, usageError("--%s: %v", flagSchema, err)
	}
	if c.IsSet(flagTimeout) {
		d := c.Duration(flagTimeout)
		if d < time.Second {
			return s, usageError("--%s %s: give at least one second, e.g. 15m (leave it out for the default)", flagTimeout, d)
		}
		s.timeout = &d
	}
	return s, nil
}

// required fails with a usage error naming every missing flag (and its
// environment variable).
func required(c *cli.Context, names ...string) error {
	var missing []string
	for _, name := range names {
		if c.String(name) != "" {
			continue
		}
		m := "--" + name
		for _, f := range c.Command.Flags {
			if sf, ok := f.(*cli.StringFlag); ok && sf.Name == name && len(sf.EnvVars) > 0 {
				m += " (or $" + sf.EnvVars[0] + ")"
			}
		}
		missing = append(missing, m)
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return usageError("missing required flag %s", missing[0])
	default:
		return usageError("missing required flags %s", strings.Join(missing, ", "))
	}
}

// checkNodeInfo rejects --new-node-info unless it is a JSON object, as
// spock.node_create needs.
func checkNodeInfo(info string) error {
	var v any
	if err := json.Unmarshal([]byte(info), &v); err != nil {
		return usageError("--%s is not valid JSON (%v); give a JSON object such as '{\"zone\": \"east\"}'", flagNewNodeInfo, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return usageError("--%s must be a JSON object such as '{\"zone\": \"east\"}', not %s", flagNewNodeInfo, jsonKind(v))
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// quoteArg quotes a stray argument for an error message, unless it looks
// like a DSN given without its flag: masking cannot be trusted on every
// quoting of a password, so such an argument is not shown at all.
func quoteArg(arg string) string {
	if strings.Contains(arg, "=") || strings.Contains(arg, "://") {
		return "(a DSN? not shown, it may hold a password; give DSNs with their flags)"
	}
	return strconv.Quote(arg)
}
