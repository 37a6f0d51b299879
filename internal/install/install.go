// Package install installs, upgrades, downgrades and removes zodan's
// procedures on one node.
//
// What gets installed is versioned with tern migrations (sql/NNN_*.sql),
// kept in <schema>.zodan_schema_version. The procedures are themselves a
// migration (002_procedures) rather than a tern code package: a code
// package is reinstalled wholesale by whichever build runs, so a node
// would silently run a different build's code under the same version
// number, and a downgrade could only drop the code, not restore the older
// one. As a migration, each version is one exact state (tables plus
// routines) with a tested down path, and the manifest the migration
// writes (zodan_code_object) lets status spot hand edits and lets
// upgrades and uninstall drop exactly what was installed, even from the
// shared spock schema. Releasing a change to templates/ therefore means a
// new migration whose down step reinstalls the previous release's
// rendered code, kept as a tern snapshot (sql/snapshots/<release>).
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
	// loading the script, and CREATE EXTENSION would then fail).
	script bool
}

// New returns an installer for the node behind conn. schema receives the
// procedures (default spock, which requires the spock extension; any other
// existing schema is accepted without Spock, so the installer's mechanics
// can be exercised on plain PostgreSQL). ro sets rendering options such as
// the default sync timeout; the node's features are detected.
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

// State is what a node has installed.
type State struct {
	Schema       string
	SchemaExists bool
	// SpockVersion is the spock extension's version, "" when missing.
	SpockVersion  string
	ServerVersion string
	// Version is the number of migrations applied; 0 = not installed.
	Version int32
	// Release is the zodan release of the installed procedures.
	Release string
	CodeSHA string
	// Drift lists installed routines that were changed or dropped by hand.
	Drift []string
	// DblinkSchema is where dblink is installed, "" when it is not.
	DblinkSchema string

	features render.Features
}

// Features are the node's features, which its procedures are rendered for.
func (st State) Features() render.Features { return st.features }

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

// renderOptions are the render options for this node's features.
func (in *Installer) renderOptions(st State) render.Options {
	ro := in.render
	ro.Features = st.features
	ro.Dblink = st.DblinkSchema
	if ro.Dblink == "" {
		ro.Dblink = "public"
	}
	return ro
}

// ExpectedCode is the code this build installs on the node described by
// st, and its checksum.
func (in *Installer) ExpectedCode(st State) (code, sha string, err error) {
	code, err = render.Procedures(in.renderOptions(st))
	if err != nil {
		return "", "", err
	}
	return code, render.Checksum(code), nil
}

// CodeMatches reports whether the installed procedures are exactly what
// this build would install at st.Version, and why not.
func (in *Installer) CodeMatches(st State) (bool, string, error) {
	if st.Version < Latest() {
		return true, "", nil // an older version's code; not ours to judge
	}
	_, sha, err := in.ExpectedCode(st)
	if err != nil {
		return false, "", err
	}
	switch {
	case len(st.Drift) > 0:
		return false, "changed by hand since install: " + strings.Join(st.Drift, ", "), nil
	case st.CodeSHA != sha:
		return false, fmt.Sprintf("installed by another build (zodan %s) than this one (zodan %s)", st.Release, zodan.Version), nil
	}
	return true, "", nil
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
	// Repaired is set when the version was current but the code was not
	// what it should be, and was reinstalled.
	Repaired bool
}

// Install brings the node to this build's version, or repairs its code
// when it is at this version but differs from what this build installs.
func (in *Installer) Install(ctx context.Context) (Result, error) {
	return in.change(ctx, Latest(), true)
}

// MigrateTo moves the node to version (down or up) without repairing.
func (in *Installer) MigrateTo(ctx context.Context, version int32) (Result, error) {
	if version < 0 || version > Latest() {
		return Result{}, fmt.Errorf("version %d does not exist: this build knows versions 0 to %d", version, Latest())
	}
	return in.change(ctx, version, false)
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
	if st.Version > Latest() {
		return res, fmt.Errorf("installed version %d is newer than this build's %d (zodan %s); use the zodan-install that installed it", st.Version, Latest(), zodan.Version)
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
	var current string
	m.OnStart = func(seq int32, name, direction, _ string) {
		current = fmt.Sprintf("%s of migration %s", direction, name)
	}
	if err := m.MigrateTo(ctx, target); err != nil {
		return res, fmt.Errorf("%s failed: %w", current, err)
	}
	after, err := in.Inspect(ctx)
	if err != nil {
		return res, err
	}
	res.To, res.ToRelease = after.Version, after.Release
	if repair && st.Version == target && target == Latest() {
		ok, _, err := in.CodeMatches(after)
		if err != nil {
			return res, err
		}
		if !ok {
			if err := in.reinstallCode(ctx, after); err != nil {
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

// migrator builds tern's migrator with the node's render data. Without
// connect it touches nothing on the node (for dry runs).
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

func (in *Installer) templateData(st State) (map[string]any, error) {
	code, sha, err := in.ExpectedCode(st)
	if err != nil {
		return nil, err
	}
	ro := in.renderOptions(st)
	return map[string]any{
		"schema":              in.schema,
		"schema_literal":      quoteLiteral(in.schema),
		"dblink_schema":       ro.Dblink,
		"create_dblink":       !in.script,
		"version_literal":     quoteLiteral(zodan.Version),
		"code":                code,
		"code_sha256_literal": quoteLiteral(sha),
	}, nil
}

// reinstallCode replaces the routines (same version, other code) in one
// transaction.
func (in *Installer) reinstallCode(ctx context.Context, st State) error {
	sql, err := in.codeInstallSQL(st)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, in.conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("reinstalling the procedures: %w", err)
		}
		return nil
	})
}

// codeInstallSQL is the shared template that swaps the routines, parsed
// with the other shared templates under the names tern gives them.
func (in *Installer) codeInstallSQL(st State) (string, error) {
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
	data, err := in.templateData(st)
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

// Plan lists, without changing anything, the SQL that Install (target =
// Latest()) or Uninstall (target = 0) would run on the node.
func (in *Installer) Plan(ctx context.Context, target int32) ([]Step, State, error) {
	st, err := in.Inspect(ctx)
	if err != nil {
		return nil, st, err
	}
	if st.Version > Latest() {
		return nil, st, fmt.Errorf("installed version %d is newer than this build's %d", st.Version, Latest())
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
	if target == st.Version && target == Latest() {
		if ok, why, err := in.CodeMatches(st); err != nil {
			return nil, st, err
		} else if !ok {
			sql, err := in.codeInstallSQL(st)
			if err != nil {
				return nil, st, err
			}
			steps = append(steps, Step{Title: "reinstall the procedures (" + why + ")", SQL: sql})
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
