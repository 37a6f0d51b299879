package installcli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/zodan-project/zodan/internal/pgtest"
)

// zodan-install finds nodes and passwords the way libpq does: PG*
// environment variables when --dsn is not given, a password file, and
// connection service files. (Not parallel: it sets the environment.)
func TestLibpqConventions(t *testing.T) {
	n := newNode(t)
	dir := t.TempDir()

	t.Run("PG* environment, no --dsn", func(t *testing.T) {
		t.Setenv("PGHOST", "127.0.0.1")
		t.Setenv("PGPORT", fmt.Sprint(n.c.Port))
		t.Setenv("PGUSER", pgtest.Superuser)
		t.Setenv("PGDATABASE", n.db)
		t.Setenv("PGPASSWORD", pgtest.SharedPassword)
		r := runOK(t, "install", "--schema", testSchema)
		wantLine(t, r, n.label, "installed version 0 -> "+latest+rel)
	})

	t.Run("password file", func(t *testing.T) {
		pass := filepath.Join(dir, "pgpass")
		line := fmt.Sprintf("127.0.0.1:%d:%s:%s:%s\n", n.c.Port, n.db, pgtest.Superuser, pgtest.SharedPassword)
		if err := os.WriteFile(pass, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PGPASSFILE", pass)
		r := runOK(t, "status", "--schema", testSchema, "--dsn", n.c.DSNWithoutPassword(n.db))
		wantLine(t, r, n.label, statusClean)
	})

	t.Run("service file", func(t *testing.T) {
		svc := filepath.Join(dir, "pg_service.conf")
		conf := fmt.Sprintf("[zodan_node]\nhost=127.0.0.1\nport=%d\ndbname=%s\nuser=%s\npassword=%s\n",
			n.c.Port, n.db, pgtest.Superuser, pgtest.SharedPassword)
		if err := os.WriteFile(svc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PGSERVICEFILE", svc)
		r := runOK(t, "status", "--schema", testSchema, "--dsn", "service=zodan_node")
		wantLine(t, r, n.label, statusClean)
		r = runOK(t, "uninstall", "--schema", testSchema, "--dsn", "service=zodan_node")
		wantLine(t, r, n.label, "uninstalled version "+latest+rel)
	})
}
