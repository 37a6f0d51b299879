package install

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"
)

// StatementError is a failed statement of the SQL the installer ran (a
// migration's up or down step, or a repair), with the line of that SQL it
// is on, so that a DBA can find it in the --dry-run output. It wraps tern's
// MigrationPgError, and so the server's *pgconn.PgError with its SQLSTATE,
// DETAIL and HINT.
type StatementError struct {
	// What ran: "up of migration 003_release_1.1.0.sql".
	What string
	// Line is the 1-based line of the SQL where the server's error
	// position is, else where the failed statement starts; 0 when unknown.
	Line int
	// Text is that line, trimmed.
	Text string
	Err  migrate.MigrationPgError
}

func (e *StatementError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s failed: %s", e.What, e.Err.PgError.Error())
	}
	return fmt.Sprintf("%s failed at line %d of its SQL: %s: %s", e.What, e.Line, e.Text, e.Err.PgError.Error())
}

// Unwrap gives tern's MigrationPgError, which unwraps to the server's error.
func (e *StatementError) Unwrap() error { return e.Err }

// execLocated runs sql (many statements, one round trip) and, when a
// statement fails, returns a *StatementError that locates it. name is the
// migration's file name, "" for other SQL.
func execLocated(ctx context.Context, conn *pgx.Conn, what, name, sql string) error {
	done, err := execCounted(ctx, conn, sql)
	if err == nil {
		return nil
	}
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return fmt.Errorf("%s failed: %w", what, err)
	}
	e := &StatementError{What: what, Err: migrate.MigrationPgError{MigrationName: name, Sql: sql, PgError: pg}}
	e.Line, e.Text = errorLine(sql, done, pg)
	return e
}

// execCounted runs sql with the simple query protocol and counts the
// statements that completed before one failed: the server answers each
// statement of a multi-statement query in turn, and stops at the first
// error.
func execCounted(ctx context.Context, conn *pgx.Conn, sql string) (done int, err error) {
	mrr := conn.PgConn().Exec(ctx, sql)
	for mrr.NextResult() {
		if _, err := mrr.ResultReader().Close(); err != nil {
			break
		}
		done++
	}
	return done, mrr.Close()
}

// errorLine finds the line of sql an error points at: the server's error
// position when it sent one (a parse or analysis error), else the start of
// the statement after the done ones that completed.
func errorLine(sql string, done int, pg *pgconn.PgError) (int, string) {
	if pg.Position > 0 {
		// The position counts characters, not bytes.
		if off, ok := byteOffset(sql, int(pg.Position)-1); ok {
			if ele, err := migrate.ExtractErrorLine(sql, off+1); err == nil {
				return ele.LineNum, lineText(ele.Text)
			}
		}
	}
	starts := statementStarts(sql)
	if done >= len(starts) {
		return 0, ""
	}
	off := starts[done]
	text, _, _ := strings.Cut(sql[off:], "\n")
	return strings.Count(sql[:off], "\n") + 1, lineText(text)
}

func lineText(s string) string {
	s = strings.TrimSpace(s)
	const limit = 200
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// byteOffset is the byte offset of the n-th (0-based) character of s.
func byteOffset(s string, n int) (int, bool) {
	i := 0
	for off := range s {
		if i == n {
			return off, true
		}
		i++
	}
	return 0, false
}

// statementStarts lists the byte offset of the first token of each
// statement in sql, as PostgreSQL splits a multi-statement query: at
// semicolons outside quoted text ('...', E'...', "...", $tag$...$tag$)
// and comments (--, nested /* */). Statements of only whitespace and comments do not count.
func statementStarts(sql string) []int {
	var starts []int
	inStatement := false
	mark := func(at int) {
		if !inStatement {
			starts = append(starts, at)
			inStatement = true
		}
	}
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = n
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			i = skipBlockComment(sql, i)
		case c == ';':
			inStatement = false
			i++
		case c == '\'' || c == '"':
			mark(i)
			i = skipQuoted(sql, i, c, false)
		case (c == 'e' || c == 'E') && i+1 < n && sql[i+1] == '\'':
			mark(i)
			i = skipQuoted(sql, i+1, '\'', true)
		case c == '$':
			mark(i)
			if tag, ok := dollarTag(sql[i:]); ok {
				if end := strings.Index(sql[i+len(tag):], tag); end >= 0 {
					i += len(tag) + end + len(tag)
				} else {
					i = n
				}
			} else {
				i++ // a parameter, $1
			}
		case isIdentStart(c):
			mark(i)
			for i < n && (isIdentStart(sql[i]) || sql[i] >= '0' && sql[i] <= '9' || sql[i] == '$') {
				i++
			}
		default:
			mark(i)
			i++
		}
	}
	return starts
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

// dollarTag is the $tag$ s starts with, if it starts with one.
func dollarTag(s string) (string, bool) {
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			return s[:i+1], true
		case isIdentStart(c), i > 1 && c >= '0' && c <= '9':
		default:
			return "", false
		}
	}
	return "", false
}

// skipQuoted returns the offset after the quoted text that starts at i
// (quote q doubled inside; backslash escapes in E'...' strings).
func skipQuoted(s string, i int, q byte, backslash bool) int {
	for j := i + 1; j < len(s); j++ {
		switch {
		case backslash && s[j] == '\\':
			j++
		case s[j] == q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(s)
}

// skipBlockComment returns the offset after the (nested) /* */ comment
// that starts at i.
func skipBlockComment(s string, i int) int {
	depth := 0
	for j := i; j < len(s)-1; j++ {
		switch {
		case s[j] == '/' && s[j+1] == '*':
			depth++
			j++
		case s[j] == '*' && s[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}
