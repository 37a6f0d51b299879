package zodancli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/zodan-project/zodan/internal/pgtest"
)

// The DSNs on the command line carry the cluster's password. It must not
// show up in anything zodan prints, in any mode or outcome, nor in the
// server's log (the CALL's statement text is logged on error).
func TestPasswordsAppearNowhere(t *testing.T) {
	c := pgtest.Shared(t)
	src, newNode, stubbed := c.Database(t), c.Database(t), c.Database(t)
	c.Exec(t, newNode, "CREATE SCHEMA zt") // the real procedures get installed here
	// The stub keeps the server log out of it (as the real procedures do
	// for their statements): it leaks on purpose, to test zodan's masking.
	stubProcedure(t, c, stubbed, "zs", "add_node", `
    PERFORM set_config('log_min_messages', 'panic', true), set_config('log_min_error_statement', 'panic', true);
    RAISE NOTICE USING MESSAGE = format('[add_node %s] phase 1/10 checks: using %s', new_node_name, src_dsn), ERRCODE = 'ZD001';
    RAISE WARNING USING MESSAGE = format('[add_node %s] trying %s', new_node_name, new_node_dsn), ERRCODE = 'ZD010';
    RAISE EXCEPTION 'cannot reach %', src_dsn USING ERRCODE = 'ZDC01', DETAIL = format('tried %s', new_node_dsn), HINT = new_node_dsn;`)
	wrongPassword := strings.Replace(c.DSN(src), pgtest.SharedPassword, pgtest.SharedPassword+"-wrong", 1)
	uri := fmt.Sprintf("postgresql://%s:%s@127.0.0.1:%d/%s", pgtest.Superuser, pgtest.SharedPassword, c.Port, newNode)

	runs := []struct {
		args []string
		// masks tells that the output holds a DSN, masked: the run tests
		// nothing if it does not.
		masks bool
	}{
		// the real procedures, failing their checks
		{[]string{"add-node", "--schema", "zt", "--verbose", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", c.DSN(newNode)}, false},
		{[]string{"add-node", "--json", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", uri}, false},
		{[]string{"health-check", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", c.DSN(newNode)}, false},
		{[]string{"health-check", "--json", "--schema", "zt", "--src-node-name", "n1", "--src-dsn", uri}, false},
		// a procedure that puts the DSNs in every message it can
		{[]string{"add-node", "--schema", "zs", "--no-install", "--src-node-name", "n1", "--src-dsn", c.DSN(stubbed), "--new-node-name", "n2", "--new-node-dsn", c.DSN(stubbed)}, true},
		{[]string{"add-node", "--json", "--schema", "zs", "--no-install", "--src-node-name", "n1", "--src-dsn", uri, "--new-node-name", "n2", "--new-node-dsn", c.DSN(stubbed)}, true},
		// a connection that fails
		{[]string{"add-node", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", wrongPassword}, false},
		{[]string{"remove-node", "--json", "--target-node-name", "n2", "--target-dsn", wrongPassword}, false},
		// refused for --no-install: the message suggests a command line
		{[]string{"health-check", "--no-install", "--src-node-name", "n1", "--src-dsn", c.DSN(src)}, true},
		// a DSN given without its flag name (or its command), not quoted
		// by the usage error
		{[]string{"health-check", "--src-node-name", "n1", c.DSN(src)}, false},
		{[]string{"health-check", "--src-node-name", "n1", `host=h password='it\'s ` + pgtest.SharedPassword + `'`}, false},
		{[]string{uri}, false},
		// a usage error after the DSNs were given
		{[]string{"add-node", "--json", "--src-node-name", "n1", "--src-dsn", c.DSN(src), "--new-node-name", "n2", "--new-node-dsn", uri, "--new-node-info", "[]"}, false},
	}
	for _, run := range runs {
		r := runZodan(t, run.args...)
		if r.code == exitOK {
			t.Errorf("%v: expected a failure\n%s", run.args, r)
		}
		if strings.Contains(r.stdout+r.stderr, pgtest.SharedPassword) {
			t.Errorf("%v: the password is in the output\n%s", run.args, r)
		}
		if run.masks && !strings.Contains(r.stdout+r.stderr, "password=********") {
			t.Errorf("%v: no masked DSN in the output\n%s", run.args, r)
		}
	}
	if log := c.ReadLog(); strings.Contains(log, pgtest.SharedPassword) {
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, pgtest.SharedPassword) {
				t.Errorf("the password is in the server log: %s", line)
			}
		}
	}
}
