package zodancli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/pgtest"
	"github.com/zodan-project/zodan/internal/render"
)

func TestNoInstallStopsWhereTheProceduresAreMissing(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA zt")

	t.Run("test schema", func(t *testing.T) {
		r := runZodan(t, "health-check", "--no-install", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(db))
		if r.code != exitFailed {
			t.Fatalf("want exit code 1\n%s", r)
		}
		for _, want := range []string{"the procedures are not installed", "--no-install forbids installing them",
			"zodan-install install --dsn '" + c.DSNWithoutPassword(db) + " password=********' --schema zt", "without --no-install"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q\n%s", want, r)
			}
		}
		if v := installedVersion(t, c, db, "zt"); v != 0 {
			t.Errorf("--no-install installed version %d", v)
		}
	})
	t.Run("spock schema", func(t *testing.T) {
		r := runZodan(t, "add-node", "--no-install", "--src-node-name", "n1", "--src-dsn", c.DSN(db),
			"--new-node-name", "n2", "--new-node-dsn", c.DSN(db))
		if r.code != exitFailed || !strings.Contains(r.stderr, "password=********'\n") {
			t.Fatalf("want exit code 1 and an install command without --schema\n%s", r)
		}
	})
}

func TestNoInstallStopsWhereTheProceduresAreOlder(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	installInto(t, c, db, "zt")
	in, err := install.New(c.Connect(t, db), "zt", render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.MigrateTo(context.Background(), install.Latest()-1); err != nil {
		t.Fatal(err)
	}

	r := runZodan(t, "health-check", "--no-install", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(db))
	if r.code != exitFailed || !strings.Contains(r.stderr, "are older than this zodan's") {
		t.Fatalf("want exit code 1 and the reason\n%s", r)
	}

	// Without --no-install the same command upgrades them first.
	r = runZodan(t, "health-check", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(db))
	if !strings.Contains(r.stderr, "zodan: installed zodan") || !strings.Contains(r.stderr, "are older than this zodan's") {
		t.Errorf("the upgrade is not reported on stderr\n%s", r)
	}
	if v := installedVersion(t, c, db, "zt"); v != install.Latest() {
		t.Errorf("version %d after the run, want %d", v, install.Latest())
	}
}

func TestInstallsMissingProceduresFirstAndSaysSo(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	c.Exec(t, db, "CREATE SCHEMA zt")
	args := []string{"health-check", "--json", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(db)}

	r := runZodan(t, args...)
	recs := jsonLines(t, r)
	if recs[0]["type"] != "install" || !strings.Contains(recs[0]["message"].(string), "installed zodan") ||
		!strings.Contains(recs[0]["message"].(string), "the procedures are not installed") {
		t.Errorf("the first event does not report the install: %v\n%s", recs[0], r)
	}
	if v := installedVersion(t, c, db, "zt"); v != install.Latest() {
		t.Fatalf("version %d after the run, want %d\n%s", v, install.Latest(), r)
	}
	if last := recs[len(recs)-1]; last["type"] != "result" {
		t.Errorf("the last line is not the result: %v", last)
	}

	// Now current: nothing to install, nothing said about it.
	r = runZodan(t, args...)
	for _, rec := range jsonLines(t, r) {
		if rec["type"] == "install" {
			t.Errorf("installed again: %v\n%s", rec, r)
		}
	}
}

// A node with newer procedures than this zodan knows
// (install.ErrNewerVersionInstalled) is never installed over: they are
// called as they are, or the command stops when the one it needs is
// missing.
func TestNewerProceduresAreNotReplaced(t *testing.T) {
	c := pgtest.Shared(t)
	db := c.Database(t)
	installInto(t, c, db, "zt")
	newer := install.Latest() + 1
	c.Exec(t, db, fmt.Sprintf("UPDATE zt.zodan_schema_version SET version = %d; UPDATE zt.zodan_install SET zodan_version = '9.9.9'", newer))
	args := []string{"health-check", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(db)}

	r := runZodan(t, args...)
	want := fmt.Sprintf("has newer procedures (version %d, zodan 9.9.9) than this zodan %s (version %d); calling them as they are", newer, zodan.Version, install.Latest())
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr does not say %q\n%s", want, r)
	}
	c.Exec(t, db, "DROP PROCEDURE zt.health_check")
	r = runZodan(t, args...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "use the zodan that installed them") {
		t.Errorf("want exit 1 and the reason\n%s", r)
	}
	if v := installedVersion(t, c, db, "zt"); v != newer {
		t.Errorf("version %d after the runs, want %d", v, newer)
	}
}
