// Package zodan holds what the zodan binaries embed: the procedure
// templates (templates/) and the installer's migrations (sql/).
//
// Both are read at run time through fs.FS so that the binaries carry
// everything they install; nothing is read from disk next to them.
package zodan

import (
	"embed"
	"io/fs"
)

// Version is the zodan release this build installs. The installer records
// it on every node; the zodan CLI installs the procedures when a node has
// an older one. Its procedures are frozen in sql/snapshots/<Version>
// ("make snapshot"); changing templates/ afterwards means a new Version.
const Version = "1.1.0"

//go:embed templates/*.sql.tmpl
var templatesFS embed.FS

//go:embed sql
var sqlFS embed.FS

// Templates is the directory of procedure templates, one file per
// procedure or helper group, with zodan.sql.tmpl as the root.
func Templates() fs.FS { return mustSub(templatesFS, "templates") }

// Migrations is tern's migration directory: NNN_name.sql files at the root,
// shared templates in shared/, every release's frozen procedures in
// snapshots/<release>/install.sql, and the psql script's template in psql/.
func Migrations() fs.FS { return mustSub(sqlFS, "sql") }

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
