package install_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

// BenchmarkInstallAndUninstall installs zodan on a node and removes it
// again. Goal: under a second per node, so that "install --cluster"
// is quick and the zodan CLI can install on first use without the DBA
// waiting for it.
func BenchmarkInstallAndUninstall(b *testing.B) {
	in, _ := benchInstaller(b)
	ctx := ctxT(b)
	for b.Loop() {
		if _, err := in.Install(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := in.Uninstall(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConninfoParse parses a keyword/value DSN and a URI in SQL, as
// the procedures do for every message that names a node. Goal: well under
// a millisecond per DSN, so that progress messages cost nothing next to
// the replication work they describe.
func BenchmarkConninfoParse(b *testing.B) {
	in, conn := benchInstaller(b)
	ctx := ctxT(b)
	if _, err := in.Install(ctx); err != nil {
		b.Fatal(err)
	}
	const dsns = `SELECT zodan_bench.zodan_dsn_display(d) FROM (VALUES
		('host=db1.example.com port=5432 dbname=''my app'' user=admin password=''s3 cret'' sslmode=require'),
		('postgresql://admin:s3cret@db1.example.com:5432,db2.example.com/my%20app?sslmode=require')) v(d)`
	for b.Loop() {
		rows, err := conn.Query(ctx, dsns)
		if err != nil {
			b.Fatal(err)
		}
		rows.Close()
	}
}

// benchInstaller is an installer for a fresh database with schema
// zodan_bench, and its connection.
func benchInstaller(b *testing.B) (*install.Installer, *pgx.Conn) {
	c := pgtest.Shared(b)
	db := c.Database(b)
	c.Exec(b, db, "CREATE SCHEMA zodan_bench")
	conn := c.Connect(b, db)
	in, err := install.New(conn, "zodan_bench", render.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return in, conn
}
