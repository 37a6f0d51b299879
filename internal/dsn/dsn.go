// Package dsn handles PostgreSQL connection strings for output: it never
// lets a password through.
package dsn

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ParseError describes why a DSN could not be parsed without quoting the
// DSN: pgx's message quotes it with only the simplest password forms
// masked, and a password with an escaped quote would partly show.
func ParseError(err error) string {
	msg := err.Error()
	if _, reason, ok := strings.Cut(msg, "`: "); ok && strings.HasPrefix(msg, "cannot parse `") {
		msg = reason
	}
	return Mask(msg)
}

// Label is a short, password-free name for where a DSN leads, such as
// "db1.example.com:5432/app". It resolves libpq defaults (PG* variables,
// service files) the way a connection would.
func Label(connString string) string {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return "(unparsable DSN: " + ParseError(err) + ")"
	}
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "socket " + host
	}
	return fmt.Sprintf("%s:%d/%s", host, cfg.Port, cfg.Database)
}
