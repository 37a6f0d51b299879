// Package install installs, upgrades, downgrades and removes zodan's
// procedures on one node.
//
// What gets installed is versioned with tern migrations (sql/NNN_*.sql),
// kept in <schema>.zodan_schema_version. Every release's procedures are an
// immutable artifact: a tern code package sql/snapshots/<release>/install.sql
// (rendered once from templates/, then frozen; releases.go holds its
// checksum), evaluated for each node with its install parameters. The
// migration that installs a release (002_procedures for 1.0.0,
// 003_release_1.1.0 for 1.1.0, ...) replaces the previous release's
// routines by its own, and its down step puts back exactly the previous
// release's. So each version is one exact state (tables plus routines)
// whatever build installs it, a downgrade restores what that release
// installed, and status can say which release a node's code is. The
// manifest the migrations write (zodan_code_object) lets status spot hand
// edits and lets upgrades and uninstall drop exactly what was installed,
// even from the shared spock schema.
//
// Every change runs under a session advisory lock, so concurrent
// installers on one node queue up and the last one finds nothing to do.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/render"
)

// lockKey serialises zodan-install runs on a node (and the psql script).
const lockKey int64 = 0x7a6f64616e0001

// versionTableName is tern's version table, inside the target schema.
const versionTableName = "zodan_schema_version"

// Installer works on one node through one connection.
type Installer struct {
	conn   *pgx.Conn
	schema string
	render render.Options
	// script: rendering the psql script, which, like upstream's, leaves
	// creating the dblink extension to the DBA (runbooks create it after
	// loading the script, and CREATE EXTENSION would then fail), and
	// installs only the newest release's code, once.
	script bool
}

// New returns an installer for the node behind conn. schema receives the
// procedures (default spock, which requires the spock extension; any other
// existing schema is accepted without Spock, so the installer's mechanics
// can be exercised on plain PostgreSQL). ro sets install parameters such
// as the default sync timeout; the node's features are detected.
func New(conn *pgx.Conn, schema string, ro render.Options) (*Installer, error) {
	if schema == "" {
		schema = render.DefaultSchema
	}
	if err := render.ValidSchemaName(schema); err != nil {
		return nil, err
	}
	ro.Schema = schema
	return &Installer{conn: conn, schema: schema, render: ro}, nil
}

// Latest is the version this build installs: its number of migrations.
func Latest() int32 {
	names, err := migrate.FindMigrations(zodan.Migrations())
	if err != nil {
		panic(err) // embedded at build time; tests cover it
	}
	return int32(len(names))
}

// ErrNewerVersionInstalled is the condition of a node that has a newer
// zodan than this build knows: this build can neither judge nor change it
// (errors.Is(err, ErrNewerVersionInstalled)).
var ErrNewerVersionInstalled = errors.New("a newer zodan is installed than this build knows")

// NewerVersionError is ErrNewerVersionInstalled for one node.
type NewerVersionError struct {
	Version int32
	Release string
}

func (e *NewerVersionError) Error() string {
	use := "the zodan-install that installed it"
	if e.Release != "" {
		use = "the zodan-install of zodan " + e.Release
	}
	return fmt.Sprintf("installed version %d%s is newer than this build's %d (zodan %s); use %s",
		e.Version, releaseSuffix(e.Release), Latest(), zodan.Version, use)
}

// Is makes errors.Is(err, ErrNewerVersionInstalled) hold.
func (e *NewerVersionError) Is(target error) bool { return target == ErrNewerVersionInstalled }

func releaseSuffix(r string) string {
	if r == "" {
		return ""
	}
	return " (zodan " + r + ")"
}

// State is what a node has installed.
type State struct {
	Schema       string
	SchemaExists bool
	// SpockVersion is the spock extension's version, "" when missing.
	SpockVersion  string
	ServerVersion string
	// Version is the number of migrations applied; 0 = not installed.
	Version int32
	// Release is the zodan release recorded for the installed procedures.
	Release string
	CodeSHA string
	// Drift lists installed routines that were changed or dropped by hand.
	Drift []string
	// DblinkSchema is where dblink is installed, "" when it is not.
	DblinkSchema string

	features render.Features
}

// NotNewer is nil unless the node has a newer version than this build
// knows: then a *NewerVersionError (ErrNewerVersionInstalled).
func (st State) NotNewer() error {
	if st.Version > Latest() {
		return &NewerVersionError{Version: st.Version, Release: st.Release}
	}
	return nil
}

// Inspect reads the node's state without changing anything.
func (in *Installer) Inspect(ctx context.Context) (State, error) {
	st := State{Schema: in.schema, features: render.DefaultFeatures()}
	var num int
	err := in.conn.QueryRow(ctx, `
		SELECT current_setting('server_version'), current_setting('server_version_num')::int,
		       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
		       coalesce((SELECT extversion FROM pg_extension WHERE extname = 'spock'), ''),
		       coalesce((SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		                  WHERE e.extname = 'dblink'), ''),
		       coalesce((SELECT a.attname FROM pg_attribute a
		                  WHERE a.attrelid = to_regclass('spock.progress')
		                    AND a.attname IN ('remote_commit_lsn', 'remote_lsn') AND NOT a.attisdropped
		                  ORDER BY a.attname = 'remote_commit_lsn' DESC LIMIT 1)::text, '')`,
		in.schema).Scan(&st.ServerVersion, &num, &st.SchemaExists, &st.SpockVersion, &st.DblinkSchema, &st.features.ProgressLSN)
	if err != nil {
		return st, fmt.Errorf("reading server facts: %w", err)
	}
	st.features.ServerVersionNum = num
	if st.features.ProgressLSN == "" {
		st.features.ProgressLSN = render.DefaultFeatures().ProgressLSN
	}
	if !st.SchemaExists {
		return st, nil
	}
	var hasVersionTable bool
	if err := in.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, in.versionTable()).Scan(&hasVersionTable); err != nil {
		return st, err
	}
	if !hasVersionTable {
		return st, nil
	}
	if err := in.conn.QueryRow(ctx, "SELECT version FROM "+in.versionTable()).Scan(&st.Version); err != nil {
		return st, fmt.Errorf("reading %s: %w", in.versionTable(), err)
	}
	var hasInstall bool
	if err := in.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, in.schema+".zodan_install").Scan(&hasInstall); err != nil {
		return st, err
	}
	if !hasInstall {
		return st, nil
	}
	if err := in.conn.QueryRow(ctx, "SELECT zodan_version, code_sha256 FROM "+in.schema+".zodan_install").Scan(&st.Release, &st.CodeSHA); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, err
	}
	rows, err := in.conn.Query(ctx, `
		SELECT c.signature || CASE WHEN p.oid IS NULL THEN ' was dropped' ELSE ' was edited' END
		  FROM `+in.schema+`.zodan_code_object c
		  LEFT JOIN pg_proc p ON p.oid = to_regprocedure(c.signature)
		 WHERE p.oid IS NULL OR md5(pg_get_functiondef(p.oid)) <> c.definition_md5
		 ORDER BY 1`)
	if err != nil {
		return st, err
	}
	st.Drift, err = pgx.CollectRows(rows, pgx.RowTo[string])
	return st, err
}

func (in *Installer) versionTable() string { return in.schema + "." + versionTableName }

// renderOptions are the install parameters of the node described by st.
func (in *Installer) renderOptions(st State) render.Options {
	ro := in.render
	ro.Features = st.features
	ro.Dblink = st.DblinkSchema
	if ro.Dblink == "" {
		ro.Dblink = render.DefaultDblink
	}
	return ro
}

// ExpectedCode is the code of release r on the node described by st, and
// its checksum.
func (in *Installer) ExpectedCode(st State, r Release) (code, sha string, err error) {
	return r.Code(in.renderOptions(st))
}

// CodeCheck says what a node's procedures are, next to what its version
// installs.
type CodeCheck struct {
	Version int32
	// Recorded is the release zodan_install names.
	Recorded string
	// Expected is the release the node's version installs; nil when that
	// version has no procedures (version 1, the journal only).
	Expected *Release
	// Matched is the release whose code, evaluated for this node, has the
	// checksum zodan_install records; nil when none has.
	Matched *Release
	// Drift lists the routines changed or dropped by hand since install.
	Drift []string
}

// OK: the node has exactly the procedures its version installs.
func (c CodeCheck) OK() bool { return c.Problem() == "" }

// Problem says how the procedures differ from what the node's version
// installs, or "".
func (c CodeCheck) Problem() string {
	switch {
	case c.Expected == nil:
		return ""
	case len(c.Drift) > 0:
		return "changed by hand since install: " + strings.Join(c.Drift, ", ")
	case c.Matched == nil:
		return fmt.Sprintf("they match no release of zodan (recorded as zodan %s): installed by another build, or their checksum was changed by hand", c.Recorded)
	case c.Matched.Version != c.Expected.Version:
		return fmt.Sprintf("they are zodan %s's, but version %d has zodan %s's", c.Matched.Version, c.Version, c.Expected.Version)
	case c.Recorded != c.Expected.Version:
		return fmt.Sprintf("they are exactly zodan %s's, but zodan_install records zodan %s", c.Expected.Version, c.Recorded)
	}
	return ""
}

// CheckCode compares the node's procedures with every release's, evaluated
// for the node's install parameters. A node with a newer version than this
// build knows gives ErrNewerVersionInstalled.
func (in *Installer) CheckCode(st State) (CodeCheck, error) {
	c := CodeCheck{Version: st.Version, Recorded: st.Release, Drift: st.Drift}
	if err := st.NotNewer(); err != nil {
		return c, err
	}
	expected, ok := ReleaseAt(st.Version)
	if !ok {
		return c, nil
	}
	c.Expected = &expected
	for _, r := range releases {
		_, sha, err := in.ExpectedCode(st, r)
		if err != nil {
			return c, err
		}
		if sha == st.CodeSHA {
			c.Matched = &r
		}
	}
	return c, nil
}

// CodeMatches reports whether the installed procedures are exactly those
// of the release the node's version installs, and why not.
func (in *Installer) CodeMatches(st State) (bool, string, error) {
	c, err := in.CheckCode(st)
	if err != nil {
		return false, "", err
	}
	return c.OK(), c.Problem(), nil
}

// checkPrerequisites refuses to install where the procedures cannot work.
func (in *Installer) checkPrerequisites(st State) error {
	if in.schema == render.DefaultSchema {
		if st.SpockVersion == "" {
			return errors.New("the spock extension is not installed in this database; run CREATE EXTENSION spock first (zodan needs Spock " + render.MinSpockVersion + " or later)")
		}
		if VersionLess(st.SpockVersion, render.MinSpockVersion) {
			return fmt.Errorf("this node runs Spock %s, zodan needs %s or later; upgrade Spock on every node first", st.SpockVersion, render.MinSpockVersion)
		}
	}
	if !st.SchemaExists {
		return fmt.Errorf("schema %s does not exist", in.schema)
	}
	if st.DblinkSchema != "" {
		if err := render.ValidSchemaName(st.DblinkSchema); err != nil {
			return fmt.Errorf("dblink is installed in a schema zodan cannot reference: %w", err)
		}
	}
	return nil
}

// Result tells what a change did on a node.
type Result struct {
	From, To               int32
	FromRelease, ToRelease string
	// Repaired is set when the node was at the target version but its
	// code was not that version's release, and was reinstalled.
	Repaired bool
}

// Install brings the node to this build's version, or repairs its code
// when it is at this version but differs from this version's release.
func (in *Installer) Install(ctx context.Context) (Result, error) {
	return in.change(ctx, Latest(), true)
}

// MigrateTo moves the node to version (down or up). A node already there
// whose code differs from that version's release gets it reinstalled.
func (in *Installer) MigrateTo(ctx context.Context, version int32) (Result, error) {
	if version < 0 || version > Latest() {
		return Result{}, fmt.Errorf("version %d does not exist: this build knows versions 0 to %d", version, Latest())
	}
	return in.change(ctx, version, true)
}

// Uninstall removes everything zodan installed on the node, and nothing
// else: the migrations' down steps, then tern's version table.
func (in *Installer) Uninstall(ctx context.Context) (Result, error) {
	res, err := in.change(ctx, 0, false)
	if err != nil {
		return res, err
	}
	if _, err := in.conn.Exec(ctx, "DROP TABLE IF EXISTS "+in.versionTable()); err != nil {
		return res, fmt.Errorf("dropping %s: %w", in.versionTable(), err)
	}
	return res, nil
}

func (in *Installer) change(ctx context.Context, target int32, repair bool) (res Result, err error) {
	if _, err := in.conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return res, fmt.Errorf("waiting for other installers: %w", err)
	}
	defer func() {
		// A lost connection releases the lock anyway.
		_, _ = in.conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	}()

	st, err := in.Inspect(ctx)
	if err != nil {
		return res, err
	}
	res = Result{From: st.Version, To: st.Version, FromRelease: st.Release, ToRelease: st.Release}
	if err := st.NotNewer(); err != nil {
		return res, err
	}
	if target == 0 && st.Version == 0 {
		return res, nil
	}
	if target > 0 {
		if err := in.checkPrerequisites(st); err != nil {
			return res, err
		}
	}
	m, err := in.migrator(ctx, st, true)
	if err != nil {
		return res, err
	}
	if err := in.migrate(ctx, m, st.Version, target); err != nil {
		return res, err
	}
	after, err := in.Inspect(ctx)
	if err != nil {
		return res, err
	}
	res.To, res.ToRelease = after.Version, after.Release
	if repair && st.Version == target && target > 0 {
		c, err := in.CheckCode(after)
		if err != nil {
			return res, err
		}
		if !c.OK() {
			if err := in.reinstallCode(ctx, after, *c.Expected); err != nil {
				return res, err
			}
			res.Repaired = true
			if after, err = in.Inspect(ctx); err == nil {
				res.ToRelease = after.Release
			}
		}
	}
	return res, err
}

// migrate runs the migrations from version from to target, each in a
// transaction of its own that also records the version, as tern's
// Migrator.MigrateTo does; it runs each migration's SQL itself so that a
// failing statement is reported with its line (*StatementError).
func (in *Installer) migrate(ctx context.Context, m *migrate.Migrator, from, target int32) error {
	for v := from; v != target; {
		var mg *migrate.Migration
		var sql, direction string
		var next int32
		if v < target {
			mg, direction, next = m.Migrations[v], "up", v+1
			sql = mg.UpSQL
		} else {
			mg, direction, next = m.Migrations[v-1], "down", v-1
			sql = mg.DownSQL
		}
		what := fmt.Sprintf("%s of migration %s", direction, mg.Name)
		err := pgx.BeginFunc(ctx, in.conn, func(tx pgx.Tx) error {
			if err := execLocated(ctx, tx.Conn(), what, mg.Name, sql); err != nil {
				return err
			}
			// As tern: settings the migration made end with it.
			if _, err := tx.Exec(ctx, "RESET ALL"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE "+in.versionTable()+" SET version = $1", next)
			return err
		})
		if err != nil {
			var se *StatementError
			if errors.As(err, &se) {
				return err
			}
			return fmt.Errorf("%s failed: %w", what, err)
		}
		v = next
	}
	return nil
}

// migrator builds tern's migrator with the node's template data. Without
// connect it touches nothing on the node (for dry runs and the script);
// with it, it creates tern's version table where it is missing.
func (in *Installer) migrator(ctx context.Context, st State, connect bool) (*migrate.Migrator, error) {
	var conn *pgx.Conn
	if connect {
		conn = in.conn
	}
	m, err := migrate.NewMigratorEx(ctx, conn, in.versionTable(), &migrate.MigratorOptions{})
	if err != nil {
		return nil, fmt.Errorf("preparing %s: %w", in.versionTable(), err)
	}
	data, err := in.templateData(st)
	if err != nil {
		return nil, err
	}
	m.Data = data
	if err := m.LoadMigrations(zodan.Migrations()); err != nil {
		return nil, fmt.Errorf("loading embedded migrations: %w", err)
	}
	return m, nil
}

// templateData is what the migrations see: the node's install parameters
// (the keys a snapshot reads, so tern's own install_snapshot would work
// too), and under "releases" one entry per release, keyed by its version,
// with what shared/install_code.sql needs to install it.
func (in *Installer) templateData(st State) (map[string]any, error) {
	ro := in.renderOptions(st)
	data, err := ro.Data()
	if err != nil {
		return nil, err
	}
	data["schema_literal"] = quoteLiteral(in.schema)
	data["create_dblink"] = !in.script
	entries := map[string]any{}
	for _, r := range releases {
		e, err := in.releaseEntry(st, r, in.script)
		if err != nil {
			return nil, err
		}
		entries[r.Version] = e
	}
	data["releases"] = entries
	return data, nil
}

// releaseEntry is the data shared/install_code.sql installs release r
// with; skip makes it render nothing but a comment.
func (in *Installer) releaseEntry(st State, r Release, skip bool) (map[string]any, error) {
	code, sha, err := in.ExpectedCode(st, r)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"schema":              in.schema,
		"schema_literal":      quoteLiteral(in.schema),
		"version":             r.Version,
		"version_literal":     quoteLiteral(r.Version),
		"code":                code,
		"code_sha256_literal": quoteLiteral(sha),
		"skip_code":           skip,
	}, nil
}

// reinstallCode replaces the routines by release r's (the node's version
// stays) in one transaction.
func (in *Installer) reinstallCode(ctx context.Context, st State, r Release) error {
	sql, err := in.codeInstallSQL(st, r)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, in.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
			return err
		}
		return execLocated(ctx, tx.Conn(), "reinstalling zodan "+r.Version+"'s procedures", "", sql)
	})
}

// codeInstallSQL is the shared template that swaps the routines for
// release r's, parsed with the other shared templates under the names tern
// gives them.
func (in *Installer) codeInstallSQL(st State, r Release) (string, error) {
	t := template.New("shared").Funcs(sprig.TxtFuncMap())
	shared, err := fs.Glob(zodan.Migrations(), "shared/*.sql")
	if err != nil {
		return "", err
	}
	for _, name := range shared {
		body, err := fs.ReadFile(zodan.Migrations(), name)
		if err != nil {
			return "", err
		}
		if _, err := t.New(name).Parse(string(body)); err != nil {
			return "", fmt.Errorf("parsing %s: %w", name, err)
		}
	}
	data, err := in.releaseEntry(st, r, false)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "shared/install_code.sql", data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// Step is one piece of SQL a change would run.
type Step struct {
	Title string
	SQL   string
}

// Plan lists, without changing anything, the SQL that a move to target
// would run on the node: Install (target = Latest()), MigrateTo(target)
// or Uninstall (target = 0, plus dropping the version table).
func (in *Installer) Plan(ctx context.Context, target int32) ([]Step, State, error) {
	st, err := in.Inspect(ctx)
	if err != nil {
		return nil, st, err
	}
	if err := st.NotNewer(); err != nil {
		return nil, st, err
	}
	if target > 0 {
		if err := in.checkPrerequisites(st); err != nil {
			return nil, st, err
		}
	}
	m, err := in.migrator(ctx, st, false)
	if err != nil {
		return nil, st, err
	}
	var steps []Step
	for v := st.Version; v < target; v++ {
		mg := m.Migrations[v]
		steps = append(steps, Step{Title: fmt.Sprintf("up %s (version %d -> %d)", mg.Name, v, v+1), SQL: mg.UpSQL})
	}
	for v := st.Version; v > target; v-- {
		mg := m.Migrations[v-1]
		steps = append(steps, Step{Title: fmt.Sprintf("down %s (version %d -> %d)", mg.Name, v, v-1), SQL: mg.DownSQL})
	}
	if target == 0 && st.Version > 0 {
		steps = append(steps, Step{Title: "drop the version table", SQL: "DROP TABLE IF EXISTS " + in.versionTable() + ";"})
	}
	if target == st.Version && target > 0 {
		c, err := in.CheckCode(st)
		if err != nil {
			return nil, st, err
		}
		if !c.OK() {
			sql, err := in.codeInstallSQL(st, *c.Expected)
			if err != nil {
				return nil, st, err
			}
			steps = append(steps, Step{Title: fmt.Sprintf("reinstall zodan %s's procedures (%s)", c.Expected.Version, c.Problem()), SQL: sql})
		}
	}
	return steps, st, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// VersionLess compares dotted version strings numerically ("5.0.10" is
// newer than "5.0.9"); a non-numeric suffix ("5.0.4-devel") is ignored.
func VersionLess(a, b string) bool {
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func versionParts(v string) []int {
	var parts []int
	for _, f := range strings.Split(v, ".") {
		n := 0
		digits := false
		for _, r := range f {
			if r < '0' || r > '9' {
				break
			}
			n = n*10 + int(r-'0')
			digits = true
		}
		if !digits {
			break
		}
		parts = append(parts, n)
	}
	return parts
}
