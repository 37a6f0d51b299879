package install_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// testSchema receives the procedures in tests: plain PostgreSQL has no
// spock schema, and the installer accepts any existing schema without
// Spock.
const testSchema = "zodan_ci"

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// installedDB is a fresh database on the shared cluster with zodan
// installed in testSchema, and a connection to it.
func installedDB(t *testing.T, ro render.Options) (*pgtest.Cluster, string, *pgx.Conn) {
	t.Helper()
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA "+testSchema)
	conn := c.Connect(t, db)
	in, err := install.New(conn, testSchema, ro)
	if err != nil {
		t.Fatal(err)
	}
	res, err := in.Install(ctxT(t))
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if res.To != install.Latest() {
		t.Fatalf("install reached version %d, want %d", res.To, install.Latest())
	}
	return c, db, conn
}
