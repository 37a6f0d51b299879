package render_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/render"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.sql from the current templates")

// goldenOptions exercise the template branches the defaults do not take:
// another schema (skip_schema keeps it on the new node), dblink elsewhere,
// PostgreSQL 17 (failover slots), Spock's newer progress column and a
// non-default timeout.
var goldenOptions = render.Options{
	Schema:      "zodan_ci",
	Dblink:      "ext",
	SyncTimeout: 90 * time.Second,
	Features:    render.Features{ServerVersionNum: 170002, ProgressLSN: "remote_commit_lsn"},
}

func TestProceduresGolden(t *testing.T) {
	got, err := render.Procedures(goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "procedures.golden.sql")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", golden)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run: go test ./internal/render -update)", err)
	}
	if diff := lineDiff(string(want), got); diff != "" {
		t.Errorf("rendered procedures differ from %s (if the template change is intended, run: go test ./internal/render -update, and review the golden file's diff):\n%s", golden, diff)
	}
}

// lineDiff describes where got first departs from want, with a few lines
// of context on each side, or returns "" when they are equal.
func lineDiff(want, got string) string {
	if want == got {
		return ""
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	// Trailing lines in common, to show how big the differing hunk is.
	j := 0
	for j < len(w)-i && j < len(g)-i && w[len(w)-1-j] == g[len(g)-1-j] {
		j++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d (want %d lines, got %d)\n", i+1, len(w), len(g))
	for k := max(0, i-3); k < i; k++ {
		fmt.Fprintf(&b, "  %5d   %s\n", k+1, w[k])
	}
	const maxHunk = 20
	for k, n := i, 0; k < len(w)-j && n < maxHunk; k, n = k+1, n+1 {
		fmt.Fprintf(&b, "- %5d   %s\n", k+1, w[k])
	}
	for k, n := i, 0; k < len(g)-j && n < maxHunk; k, n = k+1, n+1 {
		fmt.Fprintf(&b, "+ %5d   %s\n", k+1, g[k])
	}
	for k := len(g) - j; k < min(len(g), len(g)-j+3); k++ {
		fmt.Fprintf(&b, "  %5d   %s\n", k+1, g[k])
	}
	return b.String()
}

func TestLineDiff(t *testing.T) {
	if d := lineDiff("a\nb\n", "a\nb\n"); d != "" {
		t.Errorf("equal texts: got %q", d)
	}
	d := lineDiff("a\nb\nc\nd\n", "a\nB\nc\nd\n")
	for _, s := range []string{"first difference at line 2", "-     2   b", "+     2   B", "      3   c"} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
}

// TestProceduresBranches checks that each option reaches the SQL, so a
// golden file regenerated without looking cannot hide a lost branch.
func TestProceduresBranches(t *testing.T) {
	def, err := render.Procedures(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ci, err := render.Procedures(goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		sql      string
		want     []string
		mustLack []string
	}{
		{"defaults", def,
			[]string{"CREATE PROCEDURE spock.add_node(", "CREATE PROCEDURE spock.remove_node(", "CREATE PROCEDURE spock.health_check(",
				"public.dblink_exec(", "RETURN 600;", "(progress column remote_lsn;", "pg_create_logical_replication_slot(%L, %L)'",
				"Rendered for PostgreSQL 15,", "zodan " + zodan.Version},
			[]string{"zodan_ci", "ext.dblink", "remote_commit_lsn FROM"}},
		{"golden options", ci,
			[]string{"CREATE PROCEDURE zodan_ci.add_node(", "CREATE PROCEDURE zodan_ci.remove_node(", "CREATE PROCEDURE zodan_ci.health_check(",
				"ext.dblink_exec(", "RETURN 90;", "(progress column remote_commit_lsn;", "use_native_failover_slots",
				"skip := skip || 'zodan_ci'::text;", "Rendered for PostgreSQL 17,"},
			[]string{"CREATE FUNCTION spock.", "CREATE PROCEDURE spock.", "public.dblink", "RETURN 600;"}},
	} {
		for _, s := range c.want {
			if !strings.Contains(c.sql, s) {
				t.Errorf("%s: rendered SQL lacks %q", c.name, s)
			}
		}
		for _, s := range c.mustLack {
			if strings.Contains(c.sql, s) {
				t.Errorf("%s: rendered SQL contains %q", c.name, s)
			}
		}
	}
}

func TestProceduresNoMissingValues(t *testing.T) {
	for _, o := range []render.Options{
		{},
		goldenOptions,
		{Schema: "spock", Features: render.Features{ServerVersionNum: 160004, ProgressLSN: "remote_commit_lsn"}},
		{Schema: "z", Dblink: "public", SyncTimeout: time.Hour, Features: render.Features{ServerVersionNum: 180000, ProgressLSN: "remote_lsn"}},
	} {
		sql, err := render.Procedures(o)
		if err != nil {
			t.Errorf("%+v: %v", o, err)
			continue
		}
		for _, bad := range []string{"<no value>", "{{", "%!"} {
			if i := strings.Index(sql, bad); i >= 0 {
				t.Errorf("%+v: output contains %q: ...%s...", o, bad, sql[max(0, i-80):min(len(sql), i+80)])
			}
		}
	}
}

// TestProceduresDefaults: the zero Options are the documented defaults.
func TestProceduresDefaults(t *testing.T) {
	zero, err := render.Procedures(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	explicit, err := render.Procedures(render.Options{
		Schema: render.DefaultSchema, Dblink: render.DefaultDblink,
		SyncTimeout: render.DefaultSyncTimeout, Features: render.DefaultFeatures(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if zero != explicit {
		t.Errorf("zero Options render differently from the explicit defaults:\n%s", lineDiff(explicit, zero))
	}
	if render.DefaultSchema != "spock" || render.DefaultDblink != "public" || render.DefaultSyncTimeout != 10*time.Minute {
		t.Errorf("defaults changed: schema %q, dblink %q, sync timeout %s", render.DefaultSchema, render.DefaultDblink, render.DefaultSyncTimeout)
	}
	// Every routine lands in the schema, none anywhere else.
	creates := regexp.MustCompile(`(?m)^CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE) ([a-z_]+)\.([a-z_]+)\(`).FindAllStringSubmatch(zero, -1)
	if len(creates) < 40 {
		t.Fatalf("found only %d CREATE FUNCTION/PROCEDURE statements", len(creates))
	}
	seen := map[string]bool{}
	for _, m := range creates {
		if m[2] != "spock" {
			t.Errorf("%s %s.%s is not in schema spock", m[1], m[2], m[3])
		}
		if !slices.Contains(render.PublicProcedures, m[3]) && !strings.HasPrefix(m[3], "zodan_") {
			t.Errorf("%s %s.%s: helpers must be named zodan_* so they cannot clash with Spock's own functions", m[1], m[2], m[3])
		}
		if seen[m[3]] {
			t.Errorf("%s is created twice", m[3])
		}
		seen[m[3]] = true
	}
	for _, p := range render.PublicProcedures {
		if !seen[p] {
			t.Errorf("no CREATE for %s", p)
		}
	}
}

func TestProceduresRejectsBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts render.Options
		want string
	}{
		{render.Options{Schema: "Spock"}, `schema name "Spock" is not a plain lowercase identifier`},
		{render.Options{Schema: "my schema"}, `schema name "my schema"`},
		{render.Options{Schema: `x"; DROP TABLE t; --`}, `is not a plain lowercase identifier`},
		{render.Options{Schema: "1abc"}, `schema name "1abc"`},
		{render.Options{Schema: "a-b"}, `schema name "a-b"`},
		{render.Options{Schema: "s.t"}, `schema name "s.t"`},
		{render.Options{Schema: strings.Repeat("a", 64)}, `is not a plain lowercase identifier`},
		{render.Options{Dblink: "Ext"}, `dblink extension: schema name "Ext"`},
		{render.Options{SyncTimeout: 500 * time.Millisecond}, "shorter than a second"},
		{render.Options{SyncTimeout: -time.Minute}, "shorter than a second"},
		{render.Options{Features: render.Features{ServerVersionNum: 150000, ProgressLSN: "received_lsn"}}, `unknown spock.progress LSN column "received_lsn"`},
	} {
		sql, err := render.Procedures(c.opts)
		if err == nil {
			t.Errorf("%+v: rendered %d bytes, want error %q", c.opts, len(sql), c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %q, want it to contain %q", c.opts, err, c.want)
		}
	}
	for _, ok := range []string{"spock", "zodan_ci", "_x", "a1", strings.Repeat("a", 63)} {
		if err := render.ValidSchemaName(ok); err != nil {
			t.Errorf("ValidSchemaName(%q): %v", ok, err)
		}
	}
}

func TestChecksumStable(t *testing.T) {
	a, err := render.Procedures(goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	b, err := render.Procedures(goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("two renders with the same options differ:\n%s", lineDiff(a, b))
	}
	sum := render.Checksum(a)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("Checksum = %q, want 64 hex digits", sum)
	}
	if render.Checksum(b) != sum {
		t.Error("Checksum differs for identical SQL")
	}
	// Known value, so the algorithm cannot change unnoticed: installed
	// nodes record it and status compares with it.
	if got, want := render.Checksum(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf("Checksum(\"\") = %s, want SHA-256 %s", got, want)
	}
	other, err := render.Procedures(render.Options{Schema: "zodan_ci", Dblink: "ext", SyncTimeout: 91 * time.Second, Features: goldenOptions.Features})
	if err != nil {
		t.Fatal(err)
	}
	if render.Checksum(other) == sum {
		t.Error("a different sync timeout gives the same checksum")
	}
}

func TestProceduresConcurrent(t *testing.T) {
	want, err := render.Procedures(goldenOptions)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			got, err := render.Procedures(goldenOptions)
			if err == nil && got != want {
				err = fmt.Errorf("concurrent render differs")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// formatCall finds format('...' calls; the literal may contain ” quotes.
var formatCall = regexp.MustCompile(`format\(\s*'((?:[^']|'')*)'`)

// formatSpec is one PostgreSQL format() specifier after the %:
// [position$][-][width | * | *position$] then s, I, L or %.
var formatSpec = regexp.MustCompile(`^(?:\d+\$)?-?(?:\d+|\*(?:\d+\$)?)?[sIL%]`)

// TestFormatStrings: a bad format() specifier is not caught at CREATE
// time; it fails only when that line runs, often in an error path, where
// it replaces the real error with "unrecognized format() type specifier".
func TestFormatStrings(t *testing.T) {
	sql, err := render.Procedures(render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	calls := formatCall.FindAllStringSubmatchIndex(sql, -1)
	if len(calls) < 50 {
		t.Fatalf("found only %d format() calls; the pattern is broken", len(calls))
	}
	for _, m := range calls {
		lit := sql[m[2]:m[3]]
		for i := 0; i < len(lit); i++ {
			if lit[i] != '%' {
				continue
			}
			spec := formatSpec.FindString(lit[i+1:])
			if spec == "" {
				line := strings.Count(sql[:m[2]], "\n") + 1
				fn := ""
				if k := strings.LastIndex(sql[:m[2]], "\nCREATE "); k >= 0 {
					fn = strings.SplitN(sql[k+1:], "(", 2)[0]
				}
				t.Errorf("line %d of the rendered SQL (%s): format() string has an invalid specifier at %q; PostgreSQL raises \"unrecognized format() type specifier\" when it runs (use %%L for a literal, %%%% for a percent sign)",
					line, fn, lit[i:min(len(lit), i+12)])
				continue
			}
			i += len(spec)
		}
	}
}
