package zodancli

import (
	"strings"
	"testing"
	"time"
)

func TestStatementUsesNamedBindParameters(t *testing.T) {
	d := 90 * time.Second
	op := operation{proc: "add_node", settings: settings{schema: "spock", timeout: &d}, args: []procArg{
		{"src_node_name", "text", "n1"},
		{"src_dsn", "text", "host=db1 password=secret"},
		{"new_node_info", "jsonb", "{}"},
		{"sync_timeout", "interval", intervalArg(&d)},
	}}
	want := "CALL spock.add_node(src_node_name => $1::text, src_dsn => $2::text, new_node_info => $3::jsonb, sync_timeout => $4::interval)"
	if got := op.statement(); got != want {
		t.Errorf("statement\n got %s\nwant %s", got, want)
	}
	if strings.Contains(op.statement(), "secret") {
		t.Error("a DSN is in the statement text")
	}
	if got := op.signature(); got != "spock.add_node(text,text,jsonb,interval)" {
		t.Errorf("signature %s", got)
	}
	if vals := op.values(); vals[1] != "host=db1 password=secret" || vals[3] != "90.000000 seconds" {
		t.Errorf("values %v", vals)
	}
	if intervalArg(nil) != nil {
		t.Error("an unset --timeout must be NULL, so that the procedure's default applies")
	}
}
