// Package dbconn opens the connections zodan's programs use and describes
// their errors the way psql would, without passwords.
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/zodan-project/zodan/internal/dsn"
)

// Options tune a connection. The zero value is fine.
type Options struct {
	// ApplicationName shows in pg_stat_activity. Default: "zodan".
	ApplicationName string
	// OnNotice receives every NOTICE and WARNING as it arrives.
	OnNotice func(*pgconn.Notice)
	// ConnectTimeout bounds connecting when the DSN sets none. Default 10 s.
	ConnectTimeout time.Duration
	// CancelGrace is how long, after ctx is cancelled and the server was
	// asked to cancel, the client waits for the statement to end before
	// it drops the connection. A cancelled add_node rolls back before it
	// returns, so its caller waits minutes rather than cut that short.
	// Default 5 s.
	CancelGrace time.Duration
}

// Connect opens a connection from a libpq-style DSN: keyword/value or URI,
// with PG* environment variables, .pgpass and service files honoured as
// libpq does. Spock's AutoDDL is switched off for the session as a startup
// parameter, so that it also survives "RESET ALL": what zodan creates on
// one node must never be replayed on the others. Cancelling ctx while a
// statement runs sends a cancel request, so the statement stops on the
// server, not just in this process.
func Connect(ctx context.Context, connString string, opts Options) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("invalid DSN: %s", dsn.ParseError(err))
	}
	app := opts.ApplicationName
	if app == "" {
		app = "zodan"
	}
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = app
	}
	cfg.RuntimeParams["spock.enable_ddl_replication"] = "off"
	for k, v := range QuietLogging {
		cfg.RuntimeParams[k] = v
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = opts.ConnectTimeout
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = 10 * time.Second
		}
	}
	if opts.OnNotice != nil {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { opts.OnNotice(n) }
	}
	grace := opts.CancelGrace
	if grace == 0 {
		grace = 5 * time.Second
	}
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		// Ask the server to cancel first; only if it does not end the
		// statement in time does the client give up on the connection.
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: grace}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil && SQLState(err) == "42501" {
		return nil, fmt.Errorf("cannot connect to %s: %s\nzodan connects as a superuser (Spock's functions need one) and switches off "+
			"statement and parameter logging for its own sessions, so that no DSN it passes on reaches a server log",
			dsn.Label(connString), dsn.Mask(dropRepeatedLines(Describe(err))))
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %s", dsn.Label(connString), dsn.Mask(dropRepeatedLines(Describe(err))))
	}
	return conn, nil
}

// QuietLogging are the settings every zodan session starts with. The
// procedures take DSNs as arguments, and PostgreSQL logs the arguments
// (bind parameters) of statements it logs: these keep this session's
// statements, their parameters and their plans out of the server log,
// whatever log_statement, log_min_duration_statement, sampling,
// log_min_error_statement or auto_explain say for everyone else. They
// are startup parameters, so a RESET ALL keeps them. The procedures do
// the same for the sessions they open on other nodes (zodan_connect).
var QuietLogging = map[string]string{
	"log_statement":                     "none",
	"log_min_duration_statement":        "-1",
	"log_min_duration_sample":           "-1",
	"log_transaction_sample_rate":       "0",
	"log_min_error_statement":           "panic",
	"log_parameter_max_length":          "0",
	"log_parameter_max_length_on_error": "0",
	"debug_print_parse":                 "off",
	"debug_print_rewritten":             "off",
	"debug_print_plan":                  "off",
	"auto_explain.log_min_duration":     "-1",
}

// Describe renders an error as psql would: the message, then SQLSTATE,
// DETAIL and HINT when the server sent them. Passwords are masked.
func Describe(err error) string {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return dsn.Mask(err.Error())
	}
	var b strings.Builder
	// err may wrap the server error with context ("installing on n1: ...").
	if prefix, ok := strings.CutSuffix(err.Error(), pg.Error()); ok && prefix != "" {
		b.WriteString(prefix)
	}
	fmt.Fprintf(&b, "%s: %s (SQLSTATE %s)", pg.Severity, pg.Message, pg.Code)
	if pg.Detail != "" {
		b.WriteString("\nDETAIL: " + pg.Detail)
	}
	if pg.Hint != "" {
		b.WriteString("\nHINT: " + pg.Hint)
	}
	return dsn.Mask(b.String())
}

// SQLState is the SQLSTATE of err, or "" when it did not come from the
// server.
func SQLState(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

// dropRepeatedLines removes lines that repeat an earlier one: pgx reports
// every connection attempt, and with sslmode=prefer it tries each host
// twice, with the same error.
func dropRepeatedLines(s string) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		key := strings.TrimSpace(l)
		if key != "" && seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
