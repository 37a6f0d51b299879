package install_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/render"
)

// spockMissing matches what plpgsql_check reports only because plain
// PostgreSQL has no Spock: the end-to-end suite runs that code for real.
var spockMissing = regexp.MustCompile(`schema "spock" does not exist|relation "spock\.|function spock\.`)

// Every PL/pgSQL routine passes plpgsql_check, which reads the bodies as
// the planner would (types, columns, variables, unreachable ends) where
// check_function_bodies only parses them.
func TestProceduresPassPlpgsqlCheck(t *testing.T) {
	c, db, conn := installedDB(t, render.Options{})
	var available bool
	if err := conn.QueryRow(ctxT(t), `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check')`).Scan(&available); err != nil {
		t.Fatal(err)
	}
	if !available {
		t.Fatal("the plpgsql_check extension is not available: install Debian's postgresql-15-plpgsql-check (.ci/run does)")
	}
	c.Exec(t, db, `CREATE EXTENSION plpgsql_check`)
	rows, err := conn.Query(ctxT(t), `
		SELECT p.oid::regprocedure::text, coalesce(r.lineno, 0), r.level, r.message, coalesce(r.detail, '')
		  FROM pg_proc p
		 CROSS JOIN LATERAL plpgsql_check_function_tb(p.oid, fatal_errors => false,
		                                              extra_warnings => true, performance_warnings => false) r
		 WHERE p.pronamespace = $1::regnamespace
		   AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
		 ORDER BY 1, 2`, testSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	// A routine that reads Spock's catalogs cannot be checked past them
	// here: what follows (records from those catalogs, say) is then
	// reported too. Such routines count as checked up to Spock.
	problems := map[string][]string{}
	needsSpock := map[string]bool{}
	for rows.Next() {
		var fn, level, msg, detail string
		var line int
		if err := rows.Scan(&fn, &line, &level, &msg, &detail); err != nil {
			t.Fatal(err)
		}
		if spockMissing.MatchString(msg) {
			needsSpock[fn] = true
			continue
		}
		problems[fn] = append(problems[fn], strings.TrimSpace(fn+" line "+itoa(line)+": "+level+": "+msg+" "+detail))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for fn, ps := range problems {
		if needsSpock[fn] {
			t.Logf("%s uses Spock; not checked past it here: %s", fn, strings.Join(ps, "; "))
			continue
		}
		for _, p := range ps {
			t.Error(p)
		}
	}
	if len(needsSpock) == 0 {
		t.Error("no routine referred to Spock: is the check looking at the right schema?")
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
