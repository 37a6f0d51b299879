package install

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"text/template"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/render"
)

// scriptTemplate is the psql script's template, in zodan.Migrations().
const scriptTemplate = "psql/zodan.psql.tmpl"

// scriptData is what sql/psql/zodan.psql.tmpl sees.
type scriptData struct {
	Version, Schema, Dblink, DblinkLiteral string
	ServerMajor                            int
	MinSpockVersion                        string
	LockKey                                int64
	// CheckSpock: installing into the spock schema needs the extension.
	CheckSpock                        bool
	VersionTable, VersionTableLiteral string
	Latest                            int32
	// Migrations are every migration's up SQL, with the releases' code
	// installs left out.
	Migrations []scriptMigration
	// Code installs the newest release's procedures.
	Code string
}

type scriptMigration struct {
	Number    int32
	Name, SQL string
}

// Script renders the standalone SQL script for DBAs who have only psql:
// "\i zodan.sql" installs zodan in a database that has none, upgrades an
// older zodan (applying the schema parts of the migrations it lacks), and
// reinstalls the procedures where this version is already installed. It
// refuses a node with a newer version. It runs, in one transaction, what
// zodan-install would, installs the newest release's procedures once, and
// records the same version, so zodan-install can upgrade or remove it
// later. Rendered for ro's install parameters (default: schema spock,
// dblink in public, PostgreSQL 15, Spock 5.0).
func Script(ro render.Options) (string, error) {
	if ro.Schema == "" {
		ro.Schema = render.DefaultSchema
	}
	if ro.Dblink == "" {
		ro.Dblink = render.DefaultDblink
	}
	if ro.Features == (render.Features{}) {
		ro.Features = render.DefaultFeatures()
	}
	in, err := New(nil, ro.Schema, ro)
	if err != nil {
		return "", err
	}
	in.script = true
	st := State{Schema: ro.Schema, DblinkSchema: ro.Dblink, features: ro.Features}
	m, err := in.migrator(context.Background(), st, false)
	if err != nil {
		return "", err
	}
	code, err := in.codeInstallSQL(st, NewestRelease())
	if err != nil {
		return "", err
	}
	data := scriptData{
		Version: zodan.Version, Schema: ro.Schema, Dblink: ro.Dblink, DblinkLiteral: quoteLiteral(ro.Dblink),
		ServerMajor:     ro.Features.ServerVersionNum / 10000,
		MinSpockVersion: render.MinSpockVersion,
		LockKey:         lockKey,
		CheckSpock:      ro.Schema == render.DefaultSchema,
		VersionTable:    in.versionTable(), VersionTableLiteral: quoteLiteral(in.versionTable()),
		Latest: Latest(),
		Code:   code,
	}
	for _, mg := range m.Migrations {
		data.Migrations = append(data.Migrations, scriptMigration{Number: mg.Sequence, Name: mg.Name, SQL: mg.UpSQL})
	}
	body, err := fs.ReadFile(zodan.Migrations(), scriptTemplate)
	if err != nil {
		return "", err
	}
	t, err := template.New(scriptTemplate).Option("missingkey=error").Parse(string(body))
	if err != nil {
		return "", fmt.Errorf("parsing %s: %w", scriptTemplate, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("rendering %s: %w", scriptTemplate, err)
	}
	return buf.String(), nil
}
