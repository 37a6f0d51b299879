package install_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// A released snapshot never changes: every file in sql/snapshots is a
// registered release, byte for byte.
func TestSnapshotsAreFrozen(t *testing.T) {
	dirs, err := os.ReadDir("../../sql/snapshots")
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, d := range dirs {
		onDisk = append(onDisk, d.Name())
	}
	var registered []string
	for _, r := range install.Releases() {
		registered = append(registered, r.Version)
		body, err := os.ReadFile(filepath.Join("../../sql/snapshots", r.Version, "install.sql"))
		if err != nil {
			t.Errorf("zodan %s: %v", r.Version, err)
			continue
		}
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != r.SnapshotSHA256 {
			t.Errorf("sql/snapshots/%s/install.sql has SHA-256 %s, but zodan %s was released with %s: a released snapshot must never be edited (restore it from git)",
				r.Version, got, r.Version, r.SnapshotSHA256)
		}
	}
	if !slices.Equal(onDisk, registered) {
		t.Errorf("sql/snapshots holds %v, the registry (internal/install/releases.go) lists %v", onDisk, registered)
	}
}

// The templates render exactly the snapshot of the release this build is.
func TestNewestSnapshotIsTheTemplates(t *testing.T) {
	current, err := render.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	newest := install.NewestRelease()
	frozen, err := fs.ReadFile(zodan.Migrations(), newest.SnapshotPath())
	if err != nil {
		t.Fatal(err)
	}
	if current != string(frozen) {
		t.Fatalf("%s\n%s", install.StaleSnapshotAdvice(), firstDifference(string(frozen), current))
	}
}

func firstDifference(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("first difference at line %d:\n  snapshot:  %s\n  templates: %s", i+1, x, y)
		}
	}
	return ""
}

func TestReleaseRegistry(t *testing.T) {
	releases := install.Releases()
	if newest := releases[len(releases)-1]; newest.Version != zodan.Version || install.NewestRelease() != newest {
		t.Errorf("the newest release is %s, this build is zodan %s (embed.go): run `make snapshot` after bumping the version", newest.Version, zodan.Version)
	}
	for i, r := range releases {
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(r.SnapshotSHA256) {
			t.Errorf("zodan %s: checksum %q", r.Version, r.SnapshotSHA256)
		}
		if i == 0 {
			continue
		}
		p := releases[i-1]
		if !install.VersionLess(p.Version, r.Version) || p.Migration >= r.Migration {
			t.Errorf("releases out of order: %+v before %+v", p, r)
		}
	}
	if last := releases[len(releases)-1].Migration; last > install.Latest() {
		t.Errorf("zodan %s is installed by migration %d, this build has %d", zodan.Version, last, install.Latest())
	}
	for v := int32(0); v <= install.Latest()+1; v++ {
		r, ok := install.ReleaseAt(v)
		var want string
		for _, x := range releases {
			if x.Migration <= v && v <= install.Latest() {
				want = x.Version
			}
		}
		if r.Version != want || ok != (want != "") {
			t.Errorf("ReleaseAt(%d) = %q, %v; want %q", v, r.Version, ok, want)
		}
	}
	if r, ok := install.FindRelease("1.0.0"); !ok || r.Migration != 2 {
		t.Errorf("FindRelease(1.0.0) = %+v, %v; want migration 2", r, ok)
	}
	if _, ok := install.FindRelease("0.9.0"); ok {
		t.Error("FindRelease found 0.9.0")
	}
}

var installsRelease = regexp.MustCompile(`template "shared/install_code\.sql" \(index \.releases "([^"]+)"\)`)

// Each release is installed by exactly one migration (in its up step),
// the one the registry names.
func TestEachReleaseHasOneMigration(t *testing.T) {
	names, err := fs.Glob(zodan.Migrations(), "[0-9]*_*.sql")
	if err != nil {
		t.Fatal(err)
	}
	installs := map[string][]int32{}
	for _, name := range names {
		body, err := fs.ReadFile(zodan.Migrations(), name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		up, _, _ := strings.Cut(string(body), "---- create above / drop below ----")
		for _, m := range installsRelease.FindAllStringSubmatch(up, -1) {
			installs[m[1]] = append(installs[m[1]], int32(n))
		}
	}
	for _, r := range install.Releases() {
		if got := installs[r.Version]; len(got) != 1 || got[0] != r.Migration {
			t.Errorf("zodan %s is installed by migrations %v, want exactly %d", r.Version, got, r.Migration)
		}
		delete(installs, r.Version)
	}
	for v, ms := range installs {
		t.Errorf("migrations %v install zodan %s, which the registry does not list", ms, v)
	}
}

// release100Code are the checksums of zodan 1.0.0's procedures as the
// 1.0.0 build rendered them (render.Procedures at commit ee9efe4, run
// once from a checkout of it), for option sets that take every branch the
// templates had. The 1.0.0 snapshot must give exactly that code.
var release100Code = []struct {
	name string
	opts render.Options
	sha  string
}{
	{"defaults", render.Options{}, "83fd1c22ada281d42b64720a56fe8de6fab2bccb6ed7682201322180545042b2"},
	{"schema other", render.Options{Schema: "other"}, "a11dc75715861ec2a76d80a0a09b9ad08ffaba23e141b887c69bef5c3cc5ed04"},
	{"schema zodan_ci", render.Options{Schema: "zodan_ci"}, "fbd1a417cd237cb3675e481e85a95483b9490cdcf1bc75d6be37ace53bae0c77"},
	{"dblink in ext", render.Options{Dblink: "ext"}, "cd46ce68cd36bd3252c93768419d4399d68292651b37c5b5be60ea5edc53ef37"},
	{"PostgreSQL 18, remote_commit_lsn", render.Options{Features: render.Features{ServerVersionNum: 180000, ProgressLSN: "remote_commit_lsn"}},
		"e84dfada0ac8bd9acbc72e6db3a93371fe462c8bd74702ae9313d13b93006e69"},
	{"everything else", render.Options{Schema: "zodan_ci", Dblink: "ext", SyncTimeout: 90 * time.Second,
		Features: render.Features{ServerVersionNum: 170002, ProgressLSN: "remote_commit_lsn"}},
		"51c6807976769cf32066a989ddad61b74ec6ba9b03a64a33494a80edee6d4a89"},
}

func TestRelease100IsWhat100Rendered(t *testing.T) {
	r, ok := install.FindRelease("1.0.0")
	if !ok {
		t.Fatal("no release 1.0.0")
	}
	for _, c := range release100Code {
		_, sha, err := r.Code(c.opts)
		if err != nil {
			t.Fatal(err)
		}
		if sha != c.sha {
			t.Errorf("%s: the 1.0.0 snapshot gives code with SHA-256 %s, zodan 1.0.0 rendered %s", c.name, sha, c.sha)
		}
	}
}

// release100Golden is testdata/release-1.0.0.md5: what zodan-install 1.0.0
// installed in schema zodan_ci.
type release100Golden struct {
	serverMajor int
	codeSHA     string
	md5         map[string]string // signature -> md5(pg_get_functiondef)
}

func readRelease100Golden(t *testing.T) release100Golden {
	t.Helper()
	f, err := os.Open("testdata/release-1.0.0.md5")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g := release100Golden{md5: map[string]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# server_major "):
			g.serverMajor, err = strconv.Atoi(strings.TrimPrefix(line, "# server_major "))
			if err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "# code_sha256 "):
			g.codeSHA = strings.TrimPrefix(line, "# code_sha256 ")
		case strings.HasPrefix(line, "#") || line == "":
		default:
			i := strings.LastIndex(line, " ")
			sig, sum, ok := line[:max(i, 0)], line[i+1:], i > 0
			if !ok {
				t.Fatalf("testdata/release-1.0.0.md5: bad line %q", line)
			}
			g.md5[sig] = sum
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(g.md5) < 40 || g.codeSHA == "" || g.serverMajor == 0 {
		t.Fatalf("testdata/release-1.0.0.md5 is incomplete: %d routines, code_sha256 %q, server major %d", len(g.md5), g.codeSHA, g.serverMajor)
	}
	return g
}

// routineMD5s lists every routine of the schema with the md5 of its
// definition, and the manifest's.
func routineMD5s(t *testing.T, conn *pgx.Conn) (live, manifest map[string]string) {
	t.Helper()
	collect := func(sql string) map[string]string {
		rows, err := conn.Query(ctxT(t), sql)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for rows.Next() {
			var sig, sum string
			if err := rows.Scan(&sig, &sum); err != nil {
				t.Fatal(err)
			}
			m[sig] = sum
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	// As the installer computes them, under its search_path.
	if _, err := conn.Exec(ctxT(t), "SET search_path = pg_catalog, pg_temp"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctxT(t), "RESET search_path") }()
	live = collect(`SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)) FROM pg_proc p WHERE p.pronamespace = '` + testSchema + `'::regnamespace`)
	manifest = collect(`SELECT signature, definition_md5 FROM ` + testSchema + `.zodan_code_object`)
	return live, manifest
}

func mapDiff(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if got[k] != v {
			d = append(d, fmt.Sprintf("%s: want %s, got %q", k, v, got[k]))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, k+": not in zodan 1.0.0")
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

// addJournalHistory records two finished operations with their phases, as
// the procedures would have.
func addJournalHistory(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	_, err := conn.Exec(ctxT(t), `
		WITH op AS (
		    INSERT INTO `+testSchema+`.zodan_operation (kind, node_name, source_node, coordinator_pid, coordinator_started,
		           started_at, finished_at, state, phase, last_message, error, details)
		    VALUES ('add_node', 'n4', 'n1', 1, '2025-01-02 03:04:05+00', '2025-01-02 03:04:05+00', '2025-01-02 03:09:05+00',
		            'succeeded', 'compare', 'n4 joined', NULL, '{"rows": 10}'),
		           ('remove_node', 'n3', NULL, 2, '2025-01-03 00:00:00+00', '2025-01-03 00:00:00+00', '2025-01-03 00:00:09+00',
		            'failed', 'drain', 'draining', 'n3 did not drain', '{}')
		    RETURNING op_id, kind)
		INSERT INTO `+testSchema+`.zodan_operation_phase (op_id, phase_no, phase, started_at, finished_at, outcome)
		SELECT op_id, n, 'phase' || n, '2025-01-02 03:04:05+00'::timestamptz + n * interval '1 s',
		       '2025-01-02 03:04:05+00'::timestamptz + n * interval '1.5 s', CASE WHEN kind = 'add_node' OR n < 3 THEN 'done' ELSE 'failed' END
		  FROM op, generate_series(1, 3) n`)
	if err != nil {
		t.Fatal(err)
	}
}

// journalRows is the journal as DBAs read it, through the view.
func journalRows(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var s string
	err := conn.QueryRow(ctxT(t), `SELECT coalesce(string_agg(format('%s %s %s %s %s %s [%s] %s', op_id, kind, node, source_node, state,
		       elapsed, phase_durations, error), E'\n' ORDER BY op_id), '') FROM `+testSchema+`.zodan_operations`).Scan(&s)
	if err != nil {
		t.Fatalf("reading %s.zodan_operations: %v", testSchema, err)
	}
	if strings.Count(s, "\n") != 1 || !strings.Contains(s, "phase1 0.50 s, phase2 1.00 s, phase3 1.50 s failed") {
		t.Fatalf("the journal lost its history:\n%s", s)
	}
	return s
}

// A node installed at zodan 1.0.0 (version 2), upgraded to this build's
// release and downgraded again has exactly the routines zodan-install
// 1.0.0 installed (testdata/release-1.0.0.md5), and its journal survives
// both ways.
func TestRelease100RoundTrip(t *testing.T) {
	t.Parallel()
	golden := readRelease100Golden(t)
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	conn := c.Connect(t, db)
	ctx := ctxT(t)
	var major int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int / 10000").Scan(&major); err != nil {
		t.Fatal(err)
	}
	if major != golden.serverMajor {
		t.Skipf("testdata/release-1.0.0.md5 was captured on PostgreSQL %d, whose pg_get_functiondef this server (%d) may not print alike", golden.serverMajor, major)
	}
	in, err := install.New(conn, testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	is100 := func(stage string) {
		t.Helper()
		live, manifest := routineMD5s(t, conn)
		if d := mapDiff(golden.md5, live); d != "" {
			t.Errorf("%s: the routines are not zodan 1.0.0's:\n%s", stage, d)
		}
		if d := mapDiff(golden.md5, manifest); d != "" {
			t.Errorf("%s: the manifest is not zodan 1.0.0's:\n%s", stage, d)
		}
		var release, sha string
		if err := conn.QueryRow(ctx, "SELECT zodan_version, code_sha256 FROM "+testSchema+".zodan_install").Scan(&release, &sha); err != nil {
			t.Fatal(err)
		}
		if release != "1.0.0" || sha != golden.codeSHA {
			t.Errorf("%s: zodan_install says zodan %s, code %s; want 1.0.0, %s", stage, release, sha, golden.codeSHA)
		}
		st, err := in.Inspect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		check, err := in.CheckCode(st)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != 2 || !check.OK() || check.Expected.Version != "1.0.0" || check.Matched.Version != "1.0.0" {
			t.Errorf("%s: version %d, %+v: %s", stage, st.Version, check, check.Problem())
		}
	}

	res, err := in.MigrateTo(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.To != 2 || res.ToRelease != "1.0.0" {
		t.Fatalf("MigrateTo(2): %+v", res)
	}
	is100("installed at version 2")
	addJournalHistory(t, conn)
	journal := journalRows(t, conn)

	res, err = in.Install(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 2 || res.FromRelease != "1.0.0" || res.To != install.Latest() || res.ToRelease != zodan.Version || res.Repaired {
		t.Errorf("upgrade: %+v", res)
	}
	st, err := in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if check, err := in.CheckCode(st); err != nil || !check.OK() || check.Expected.Version != zodan.Version {
		t.Errorf("after the upgrade: %+v %v: %s", check, err, check.Problem())
	}
	if st.CodeSHA == golden.codeSHA {
		t.Error("the upgrade kept zodan 1.0.0's code")
	}
	if got := journalRows(t, conn); got != journal {
		t.Errorf("the upgrade changed the journal:\nbefore: %s\nafter:  %s", journal, got)
	}

	res, err = in.MigrateTo(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != install.Latest() || res.To != 2 || res.ToRelease != "1.0.0" {
		t.Errorf("downgrade: %+v", res)
	}
	is100("downgraded to version 2")
	if got := journalRows(t, conn); got != journal {
		t.Errorf("the downgrade changed the journal:\nbefore: %s\nafter:  %s", journal, got)
	}
}

// A fresh install has this build's release, as frozen: every routine of
// its code, each in the manifest as created.
func TestFreshInstallIsTheNewestRelease(t *testing.T) {
	t.Parallel()
	_, _, conn := installedDB(t, render.Options{})
	in, err := install.New(conn, testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Inspect(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	code, sha, err := in.ExpectedCode(st, install.NewestRelease())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != install.Latest() || st.Release != zodan.Version || st.CodeSHA != sha || len(st.Drift) != 0 {
		t.Errorf("fresh install: version %d, release %s, code %s (want %s), drift %v", st.Version, st.Release, st.CodeSHA, sha, st.Drift)
	}
	live, manifest := routineMD5s(t, conn)
	if d := mapDiff(live, manifest); d != "" {
		t.Errorf("the manifest differs from the routines:\n%s", d)
	}
	if want := len(createRE.FindAllString(code, -1)); len(live) != want {
		t.Errorf("%d routines installed, the code creates %d", len(live), want)
	}
}

// A node with a newer version than this build knows is left alone, with
// ErrNewerVersionInstalled, whatever is asked.
func TestNewerVersionIsLeftAlone(t *testing.T) {
	t.Parallel()
	c, db, conn := installedDB(t, render.Options{})
	newer := install.Latest() + 1
	c.Exec(t, db, fmt.Sprintf("UPDATE %s.zodan_schema_version SET version = %d; UPDATE %s.zodan_install SET zodan_version = '9.9.9'", testSchema, newer, testSchema))
	in, err := install.New(conn, testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	st, err := in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, errCheck := in.CheckCode(st)
	_, _, errPlan := in.Plan(ctx, install.Latest())
	_, errInstall := in.Install(ctx)
	_, errDown := in.MigrateTo(ctx, 1)
	_, errUninstall := in.Uninstall(ctx)
	for name, err := range map[string]error{"NotNewer": st.NotNewer(), "CheckCode": errCheck, "Plan": errPlan, "Install": errInstall, "MigrateTo": errDown, "Uninstall": errUninstall} {
		if !errors.Is(err, install.ErrNewerVersionInstalled) {
			t.Errorf("%s: %v, want ErrNewerVersionInstalled", name, err)
			continue
		}
		if want := fmt.Sprintf("installed version %d (zodan 9.9.9) is newer than this build's %d (zodan %s); use the zodan-install of zodan 9.9.9", newer, install.Latest(), zodan.Version); err.Error() != want {
			t.Errorf("%s: %q, want %q", name, err, want)
		}
	}
	if st, err := in.Inspect(ctx); err != nil || st.Version != newer {
		t.Errorf("after the refusals: version %d, %v", st.Version, err)
	}
}

var routineRE = regexp.MustCompile(`(?m)^CREATE (FUNCTION|PROCEDURE) ` + testSchema + `\.([a-z_0-9]+)\(`)

// paramList is the parenthesised parameter list that starts at s[0].
func paramList(s string) string {
	depth, quoted := 0, false
	for i, c := range s {
		switch {
		case c == '\'':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return s[:i+1]
			}
		}
	}
	return s
}

// lineOf is the 1-based line of sql that starts with prefix, the last one
// when there are several.
func lineOf(t *testing.T, sql, prefix string) int {
	t.Helper()
	line := 0
	for i, l := range strings.Split(sql, "\n") {
		if strings.HasPrefix(l, prefix) {
			line = i + 1
		}
	}
	if line == 0 {
		t.Fatalf("no line starts with %q", prefix)
	}
	return line
}

// A statement that fails during an install is reported with its line in
// the migration's SQL (as --dry-run shows it), the server's message,
// SQLSTATE, DETAIL and HINT; the node is left as it was.
func TestFailedStatementIsLocated(t *testing.T) {
	t.Parallel()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	conn := c.Connect(t, db)
	ctx := ctxT(t)
	in, err := install.New(conn, testSchema, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.MigrateTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	st, err := in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := in.ExpectedCode(st, install.Releases()[0])
	if err != nil {
		t.Fatal(err)
	}
	code, _, err := in.ExpectedCode(st, install.NewestRelease())
	if err != nil {
		t.Fatal(err)
	}
	steps, _, err := in.Plan(ctx, install.Latest())
	if err != nil {
		t.Fatal(err)
	}
	up := steps[len(steps)-1]
	if !strings.HasPrefix(up.Title, "up 003_release_1.1.0.sql") && install.Latest() == 3 {
		t.Fatalf("the last step is %q", up.Title)
	}
	upName := strings.Fields(up.Title)[1]

	// A routine of the new release's that a DBA created beforehand.
	var kind, name, params string
	for _, m := range routineRE.FindAllStringSubmatchIndex(code, -1) {
		k, n := code[m[2]:m[3]], code[m[4]:m[5]]
		p := paramList(code[m[1]-1:])
		if strings.Contains(old, "CREATE "+k+" "+testSchema+"."+n+"(") || regexp.MustCompile(`\b(IN)?OUT\b`).MatchString(p) {
			continue
		}
		kind, name, params = k, n, p
		break
	}
	if name == "" {
		t.Fatalf("zodan %s adds no routine without OUT parameters to zodan 1.0.0's", zodan.Version)
	}
	mine := fmt.Sprintf("CREATE %s %s.%s%s", kind, testSchema, name, params)
	if kind == "FUNCTION" {
		mine += " RETURNS int LANGUAGE sql AS 'SELECT 1'"
	} else {
		mine += " LANGUAGE sql AS ''"
	}
	c.Exec(t, db, mine)

	_, err = in.Install(ctx)
	var se *install.StatementError
	if !errors.As(err, &se) {
		t.Fatalf("install over a conflicting %s: %v, want a StatementError", name, err)
	}
	wantLine := lineOf(t, up.SQL, "CREATE "+kind+" "+testSchema+"."+name+"(")
	wantText := strings.TrimSpace(strings.Split(up.SQL, "\n")[wantLine-1])
	want := fmt.Sprintf("up of migration %s failed at line %d of its SQL: %s: ERROR: %s %q already exists with same argument types (SQLSTATE 42723)",
		upName, wantLine, wantText, strings.ToLower(kind), name)
	if kind == "PROCEDURE" {
		want = strings.Replace(want, "ERROR: procedure", "ERROR: function", 1)
	}
	if se.Line != wantLine || err.Error() != want {
		t.Errorf("install over a conflicting routine:\n got %s\nwant %s", err, want)
	}
	t.Logf("reported: %s", dbconn.Describe(err))
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "42723" || !strings.HasPrefix(dbconn.Describe(err), want) {
		t.Errorf("the server's error is not wrapped: %v / %s", pg, dbconn.Describe(err))
	}
	st, err = in.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if check, err := in.CheckCode(st); st.Version != 2 || err != nil || !check.OK() {
		t.Errorf("after the failed upgrade: version %d, %s %v", st.Version, check.Problem(), err)
	}

	// An error with a position in the SQL: a column zodan's table lost.
	c.Exec(t, db, fmt.Sprintf("DROP %s %s.%s%s; ALTER TABLE %s.zodan_install RENAME COLUMN installed_by TO who",
		kind, testSchema, name, params, testSchema))
	_, err = in.Install(ctx)
	wantLine = lineOf(t, up.SQL, "       installed_at = now(), installed_by = current_user;")
	want = fmt.Sprintf(`up of migration %s failed at line %d of its SQL: installed_at = now(), installed_by = current_user;: ERROR: column "installed_by" of relation "zodan_install" does not exist (SQLSTATE 42703)`,
		upName, wantLine)
	t.Logf("reported: %v", err)
	if !errors.As(err, &se) || se.Line != wantLine || err.Error() != want {
		t.Errorf("install with a renamed column:\n got %v\nwant %s", err, want)
	}
}
