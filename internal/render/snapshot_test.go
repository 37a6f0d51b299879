package render_test

import (
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/render"
)

var snapshotOptions = []render.Options{
	{},
	goldenOptions,
	{Schema: "spock", Dblink: "ext", Features: render.Features{ServerVersionNum: 160004, ProgressLSN: "remote_commit_lsn"}},
	{Schema: "z", SyncTimeout: time.Hour, Features: render.Features{ServerVersionNum: 180000, ProgressLSN: "remote_lsn"}},
}

// The snapshot, evaluated for a node, is exactly what the templates
// render with that node's values in place of the placeholders.
func TestSnapshotIsTheTemplatesRendered(t *testing.T) {
	snap, err := render.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range snapshotOptions {
		got, err := render.Eval(snap, o)
		if err != nil {
			t.Fatal(err)
		}
		want, err := render.RenderDirect(zodan.Templates(), zodan.Version, o)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%+v: the evaluated snapshot differs from the templates rendered directly:\n%s", o, lineDiff(want, got))
		}
		if p, err := render.Procedures(o); err != nil || p != got {
			t.Errorf("%+v: Procedures is not Eval(Snapshot()): %v", o, err)
		}
	}
}

var ternAction = regexp.MustCompile(`\{\{.*?\}\}`)

// A snapshot leaves nothing open but the per-node install parameters (and
// the conditions on them that the templates have).
func TestSnapshotLeavesOnlyInstallParameters(t *testing.T) {
	snap, err := render.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	header, body, ok := strings.Cut(snap, "*/ -}}\n")
	if !ok || !strings.HasPrefix(header, "{{/*") {
		t.Fatalf("the snapshot does not start with its header comment:\n%.300s", snap)
	}
	allowed := map[string]bool{}
	for _, k := range []string{render.KeySchema, render.KeyDblinkSchema, render.KeySyncTimeoutSeconds, render.KeyServerMajor, render.KeyProgressLSN} {
		allowed["{{."+k+"}}"] = true
	}
	conditions := regexp.MustCompile(`^\{\{(if [a-z ."_0-9()]+|else|end)\}\}$`)
	for _, a := range ternAction.FindAllString(body, -1) {
		if !allowed[a] && !conditions.MatchString(a) && a != `{{"{{"}}` {
			t.Errorf("the snapshot leaves %s open", a)
		}
	}
	for _, baked := range []string{"zodan " + zodan.Version, render.MinSpockVersion} {
		if !strings.Contains(body, baked) {
			t.Errorf("the snapshot lacks %q", baked)
		}
	}
}

func snapshotOf(t *testing.T, root string) (string, error) {
	t.Helper()
	return render.SnapshotOf(fstest.MapFS{render.RootTemplate: {Data: []byte(root)}}, "9.9.9")
}

// The templates may print the per-node parameters and compare them with
// constants in an {{if}}; anything else is refused, because a snapshot
// could not reproduce it.
func TestSnapshotRefusesLogicOnParameters(t *testing.T) {
	for _, tmpl := range []string{
		`{{printf "%s" .S}}`,
		`{{.S | printf "%s"}}`,
		`{{len .Dblink}}`,
		`{{$s := .Schema}}{{$s}}`,
		`{{range .S}}x{{end}}`,
		`{{with .Dblink}}{{.}}{{end}}`,
		`{{if eq .S .Version}}x{{end}}`,
		`{{if len .S}}x{{end}}`,
		`{{if $x := .S}}x{{end}}`,
		`{{.Features}}`,
		`{{.}}`,
		`{{template "other" .Features}}{{define "other"}}{{.ServerMajor}}{{end}}`,
	} {
		if snap, err := snapshotOf(t, tmpl); err == nil || !strings.Contains(err.Error(), "per-node install parameters") {
			t.Errorf("%s: got %q, %v; want it refused", tmpl, snap, err)
		}
	}
}

// An {{if}} on a parameter is decided per node, as the template would
// have decided it; literal braces survive.
func TestSnapshotCarriesConditionsAndBraces(t *testing.T) {
	snap, err := snapshotOf(t, `{{.Version}} {{.LockKey1}}
{{- if ne .Schema "spock" }} own {{.Schema}}{{else}} spock{{end}}
{{if ge .Features.ServerMajor 17}}failover{{end}}{{if and (eq .Dblink "ext") (lt .SyncTimeout 60)}} quick{{end}}
{{"{{"}}x}} {{"{"}}{{.S}}} {{"{{{"}}
{{- /* a comment */ -}}
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opts render.Options
		want string
	}{
		{render.Options{}, "9.9.9 2054120545 spock\n\n{{x}} {spock} {{{"},
		{render.Options{Schema: "z", Dblink: "ext", SyncTimeout: 30 * time.Second, Features: render.Features{ServerVersionNum: 170000, ProgressLSN: "remote_lsn"}},
			"9.9.9 2054120545 own z\nfailover quick\n{{x}} {z} {{{"},
	} {
		got, err := render.Eval(snap, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%+v: got %q, want %q\nsnapshot:\n%s", c.opts, got, c.want, snap)
		}
	}
}

func TestEvalRejectsBadOptions(t *testing.T) {
	snap, err := render.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := render.Eval(snap, render.Options{Schema: "Bad"}); err == nil || !strings.Contains(err.Error(), `schema name "Bad"`) {
		t.Errorf("Eval with a bad schema: %v", err)
	}
	if _, err := render.Eval("{{.nosuch}}", render.Options{}); err == nil || !strings.Contains(err.Error(), "not an install parameter") {
		t.Errorf("Eval of a snapshot that uses an unknown key: %v", err)
	}
}
