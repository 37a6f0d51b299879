package zodancli

import (
	"fmt"
	"strings"
	"time"
)

// operation is one CALL of a procedure, as the command line asked for it.
type operation struct {
	proc string // the procedure, e.g. "add_node"
	// title names the operation in the text output, e.g.
	// "add_node n4 (source n1)".
	title string
	// dsn is where zodan connects and runs the CALL.
	dsn string
	// args are the procedure's arguments, all of them, in order.
	args []procArg
	// afterCancel tells the user what state a cancelled CALL may have
	// left behind and how to clean up; journal is the node and schema
	// where zodan_operations records it.
	afterCancel func(journal string) string
	settings    settings
}

// procArg is one argument, always passed as a bind parameter: DSNs hold
// passwords, and statement texts end up in server logs and
// pg_stat_activity.
type procArg struct {
	name  string // the parameter's name, for named notation
	typ   string // its SQL type, for the cast and the signature
	value any    // nil is NULL
}

// settings are the flags every command has.
type settings struct {
	schema    string
	json      bool
	noInstall bool
	verbose   bool
	// timeout is the procedure's sync_timeout; nil leaves it NULL, so
	// that the procedure's default applies.
	timeout *time.Duration
}

// statement is the CALL, with named notation so that it does not depend
// on argument order and reads well in pg_stat_activity.
func (op operation) statement() string {
	parts := make([]string, len(op.args))
	for i, a := range op.args {
		parts[i] = fmt.Sprintf("%s => $%d::%s", a.name, i+1, a.typ)
	}
	return fmt.Sprintf("CALL %s.%s(%s)", op.settings.schema, op.proc, strings.Join(parts, ", "))
}

// values are the bind parameters of statement.
func (op operation) values() []any {
	vals := make([]any, len(op.args))
	for i, a := range op.args {
		vals[i] = a.value
	}
	return vals
}

// signature is the procedure's regprocedure text, to check that the
// node has exactly the procedure the CALL expects.
func (op operation) signature() string {
	types := make([]string, len(op.args))
	for i, a := range op.args {
		types[i] = a.typ
	}
	return fmt.Sprintf("%s.%s(%s)", op.settings.schema, op.proc, strings.Join(types, ","))
}

// intervalArg is the sync_timeout argument: NULL unless --timeout was
// given.
func intervalArg(d *time.Duration) any {
	if d == nil {
		return nil
	}
	return fmt.Sprintf("%.6f seconds", d.Seconds())
}

// optional turns an empty flag value into NULL.
func optional(s string) any {
	if s == "" {
		return nil
	}
	return s
}
