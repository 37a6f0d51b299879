// Package cliexit is what zodan's two commands, zodan and zodan-install,
// share about ending: the exit codes, usage errors, and the one spelling
// of "cancelled".
package cliexit

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/dsn"
)

// Exit codes. Automation relies on them; the commands' --help lists them.
// zodan adds 3 for a failed health check.
const (
	OK        = 0
	Failed    = 1 // the operation failed, on at least one node
	Usage     = 2
	Cancelled = 130 // as a shell reports a process ended by SIGINT
)

// CancelledWord is how both commands say that the user cancelled.
const CancelledWord = "cancelled"

// Error ends a command with an exit code and a message for stderr
// (prefixed with the command's name; may be empty). It is a cli.ExitCoder.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// ExitCode is the process's exit code.
func (e *Error) ExitCode() int { return e.Code }

// UsageHint ends every usage error.
const UsageHint = "(run with --help for usage)"

// Usagef is a usage error (exit 2): what is wrong with the command line,
// and where to read how it goes.
func Usagef(format string, a ...any) *Error {
	return &Error{Code: Usage, Msg: fmt.Sprintf(format, a...) + "\n" + UsageHint}
}

// Failedf ends the command with exit 1.
func Failedf(format string, a ...any) *Error {
	return &Error{Code: Failed, Msg: fmt.Sprintf(format, a...)}
}

// OnUsageError replaces urfave/cli's handling of a flag it cannot parse,
// which prints the whole help on stdout: stdout may carry only output
// (JSON with zodan --json), and the help would bury the one line that
// matters. A DSN given where a flag was expected is masked.
func OnUsageError(_ *cli.Context, err error, _ bool) error {
	return Usagef("%s", dsn.Mask(err.Error()))
}

// Print writes msg on w as the command prog reports an error: prefixed
// with its name, continuation lines indented. Nothing for an empty msg.
func Print(w io.Writer, prog, msg string) {
	if msg == "" {
		return
	}
	fmt.Fprintln(w, prog+": "+strings.ReplaceAll(msg, "\n", "\n  "))
}
