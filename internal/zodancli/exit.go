package zodancli

import (
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/cliexit"
	"github.com/zodan-project/zodan/internal/dsn"
)

// exitError ends the command with an exit code and a message for stderr.
type exitError struct {
	code int
	// msg is printed on stderr, prefixed with "zodan: "; may be empty.
	msg string
	// resultWritten is set once the command printed its JSON result, so
	// that report does not print a second one.
	resultWritten bool
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }

func usageError(format string, a ...any) error { return cliexit.Usagef(format, a...) }

// onUsageError: a flag urfave/cli cannot parse is a usage error of one
// line, as in zodan-install, without the help on stdout (which must carry
// only JSON with --json).
var onUsageError = cliexit.OnUsageError

// report prints what ended the command and returns its exit code.
func report(err error, args []string, stdout, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code, msg, written := exitUsage, err.Error(), false
	var ee *exitError
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ee):
		code, msg, written = ee.code, ee.msg, ee.resultWritten
	case errors.As(err, &ec):
		code = ec.ExitCode()
	default:
		// urfave/cli reports other usage problems as plain errors.
	}
	// Usage errors may quote an argument that is a DSN given without
	// its flag name.
	msg = dsn.Mask(msg)
	cliexit.Print(stderr, "zodan", msg)
	if !written && jsonRequested(args) {
		// Automation reading --json output finds a result line even when
		// the command line itself was wrong.
		w := newJSONWriter(stdout)
		w.write(resultRecord{Type: "result", OK: false, ExitCode: code, Phases: []phaseRecord{},
			Error: &errorRecord{Message: firstLine(msg)}})
	}
	return code
}

// jsonRequested tells whether args ask for --json, for errors that
// happen before or while the flags are parsed.
func jsonRequested(args []string) bool {
	on := false
	for _, a := range args[min(1, len(args)):] {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		on = true
		if hasValue {
			on, _ = strconv.ParseBool(value)
		}
	}
	return on
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
