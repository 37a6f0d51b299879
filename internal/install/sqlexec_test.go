package install

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

func TestStatementStarts(t *testing.T) {
	for _, c := range []struct {
		sql  string
		want []string // the statements' first tokens
	}{
		{"SELECT 1; SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"  -- a; comment\n/* nested /* ; */ ; */ SELECT ';'; ;; \n", []string{"SELECT ';'"}},
		{`SELECT 'it''s; fine', "a;""b", E'\'; still', e'\\'; SELECT 2`, []string{`SELECT 'it`, "SELECT 2"}},
		{"DO $zodan$ BEGIN PERFORM 1; END $zodan$; DO $$ ; $$; CREATE FUNCTION f() AS $fn$ $x$ ; $fn$;", []string{"DO $zodan$", "DO $$", "CREATE FUNCTION"}},
		{"SELECT $1; SELECT a$b; SELECT 'x'", []string{"SELECT $1", "SELECT a$b", "SELECT 'x'"}},
		{"SELECT élan; -- end", []string{"SELECT élan"}},
		{"-- only a comment\n", nil},
	} {
		var got []string
		for _, off := range statementStarts(c.sql) {
			got = append(got, c.sql[off:])
		}
		if len(got) != len(c.want) {
			t.Errorf("%q: %d statements %q, want %d", c.sql, len(got), got, len(c.want))
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], c.want[i]) {
				t.Errorf("%q: statement %d starts %q, want %q", c.sql, i, got[i], c.want[i])
			}
		}
	}
}

// The server runs exactly as many statements as statementStarts finds in
// every migration, up and down, and in the code swap: otherwise a failed
// statement would be located on the wrong line.
func TestStatementStartsAgreeWithTheServer(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA zodan_ci")
	conn := c.Connect(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, err := New(conn, "zodan_ci", render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := in.migrator(ctx, st, true)
	if err != nil {
		t.Fatal(err)
	}
	run := func(what, sql string) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done, err := execCounted(ctx, conn, sql)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if want := len(statementStarts(sql)); done != want {
			t.Errorf("%s: the server ran %d statements, statementStarts finds %d", what, done, want)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, mg := range m.Migrations {
		run("up of "+mg.Name, mg.UpSQL)
	}
	st, err = in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sql, err := in.codeInstallSQL(st, NewestRelease())
	if err != nil {
		t.Fatal(err)
	}
	run("reinstalling the code", sql)
	for i := len(m.Migrations) - 1; i >= 0; i-- {
		run("down of "+m.Migrations[i].Name, m.Migrations[i].DownSQL)
	}
}

func TestErrorLine(t *testing.T) {
	sql := "SELECT 1;\n-- é comment\nSELECT 'é', nosuch;\n\n  CREATE TABLE t ();\n"
	// Positions count characters: "nosuch" is at character 37.
	pos := strings.Index(sql, "nosuch")
	chars := len([]rune(sql[:pos])) + 1
	if line, text := errorLine(sql, 1, &pgconn.PgError{Position: int32(chars)}); line != 3 || text != "SELECT 'é', nosuch;" {
		t.Errorf("with a position: line %d %q", line, text)
	}
	if line, text := errorLine(sql, 2, &pgconn.PgError{}); line != 5 || text != "CREATE TABLE t ();" {
		t.Errorf("without: line %d %q", line, text)
	}
	if line, _ := errorLine(sql, 3, &pgconn.PgError{}); line != 0 {
		t.Errorf("past the last statement: line %d", line)
	}
}

var setsRelease = regexp.MustCompile(`SET zodan_version = '([^']+)'`)

// Each migration's up step installs (records) exactly the release the
// registry says it installs, and its down step the release before, as
// rendered for a node.
func TestMigrationsInstallTheirRelease(t *testing.T) {
	for _, script := range []bool{false, true} {
		in, err := New(nil, "zodan_ci", render.Options{})
		if err != nil {
			t.Fatal(err)
		}
		in.script = script
		st := State{Schema: "zodan_ci", features: render.DefaultFeatures()}
		m, err := in.migrator(context.Background(), st, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, mg := range m.Migrations {
			var up, down []string
			for _, x := range setsRelease.FindAllStringSubmatch(mg.UpSQL, -1) {
				up = append(up, x[1])
			}
			for _, x := range setsRelease.FindAllStringSubmatch(mg.DownSQL, -1) {
				down = append(down, x[1])
			}
			var wantUp, wantDown []string
			if r, ok := ReleaseAt(mg.Sequence); ok && r.Migration == mg.Sequence && !script {
				wantUp = []string{r.Version}
				if p, ok := ReleaseAt(mg.Sequence - 1); ok {
					wantDown = []string{p.Version}
				}
			}
			if !slices.Equal(up, wantUp) || !slices.Equal(down, wantDown) {
				t.Errorf("script %v: %s installs %v up and %v down, want %v and %v", script, mg.Name, up, down, wantUp, wantDown)
			}
			if script && strings.Contains(mg.UpSQL, "CREATE FUNCTION") {
				t.Errorf("in the script, %s creates routines", mg.Name)
			}
		}
	}
}
