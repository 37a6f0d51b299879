package installcli_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/zodancli"
)

// --to takes a release as well as a version number, and status names the
// release a node's procedures are, or says how they differ from it.
func TestReleasesByNameAndStatus(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	flags := []string{"--schema", testSchema, "--dsn", n.dsn}
	status := func() result { return run(t, append([]string{"status"}, flags...)...) }
	first := install.Releases()[0]
	is100 := fmt.Sprintf("version %d (zodan %s), procedures exactly as released in zodan %s", first.Migration, first.Version, first.Version) + thisBuild

	r := runOK(t, append([]string{"upgrade", "--to", first.Version}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("upgraded version 0 -> %d (zodan %s)", first.Migration, first.Version))
	wantLine(t, status(), n.label, is100)

	r = runOK(t, append([]string{"install"}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("installed version %d (zodan %s) -> %s%s", first.Migration, first.Version, latest, rel))
	wantLine(t, status(), n.label, statusClean)

	r = runOK(t, append([]string{"downgrade", "--to", first.Version}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("downgraded version %s%s -> %d (zodan %s)", latest, rel, first.Migration, first.Version))
	wantLine(t, status(), n.label, is100)
	r = runOK(t, append([]string{"downgrade", "--to", first.Version}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("version %d (zodan %s), nothing to do", first.Migration, first.Version))

	// Hand edits at an older release: named, and repaired by moving "to"
	// that release.
	editFunction(t, n, "zodan_ci.zodan_redact(text)", "    IF msg IS NULL THEN", "    -- edited by hand\n    IF msg IS NULL THEN")
	r = status()
	want := fmt.Sprintf("FAILED: version %d (zodan %s), but its procedures differ: changed by hand since install: zodan_ci.zodan_redact(text) was edited; zodan-install upgrade --to %s repairs them (install moves to zodan %s)",
		first.Migration, first.Version, first.Version, zodan.Version)
	if r.code != 1 || !strings.Contains(r.stdout, n.label+": "+want) {
		t.Errorf("status of an edited %s node: want exit 1 and %q\n%s", first.Version, want, r)
	}
	r = runOK(t, append([]string{"upgrade", "--to", first.Version}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("version %d (zodan %s), procedures reinstalled: they differed from zodan %s's as released", first.Migration, first.Version, first.Version))
	wantLine(t, status(), n.label, is100)

	// The older release's code where the newer one's belongs.
	n.c.Exec(t, n.db, "UPDATE zodan_ci.zodan_schema_version SET version = "+latest)
	r = status()
	if want := fmt.Sprintf("they are zodan %s's, but version %s has zodan %s's; zodan-install install repairs them", first.Version, latest, zodan.Version); r.code != 1 || !strings.Contains(r.stdout, want) {
		t.Errorf("status of a node at version %s with zodan %s's code: want %q\n%s", latest, first.Version, want, r)
	}
	runOK(t, append([]string{"install"}, flags...)...)
	wantLine(t, status(), n.label, statusClean)

	// The right code, recorded as another release.
	n.c.Exec(t, n.db, "UPDATE zodan_ci.zodan_install SET zodan_version = '"+first.Version+"'")
	r = status()
	if want := fmt.Sprintf("version %s (zodan %s), but its procedures differ: they are exactly zodan %s's, but zodan_install records zodan %s", latest, first.Version, zodan.Version, first.Version); r.code != 1 || !strings.Contains(r.stdout, want) {
		t.Errorf("status of a node whose release record is wrong: want %q\n%s", want, r)
	}
	runOK(t, append([]string{"install"}, flags...)...)
	wantLine(t, status(), n.label, statusClean)

	// A newer version than this build knows: reported, not judged.
	n.c.Exec(t, n.db, fmt.Sprintf("UPDATE zodan_ci.zodan_schema_version SET version = %d; UPDATE zodan_ci.zodan_install SET zodan_version = '9.9.9'", install.Latest()+1))
	r = runOK(t, append([]string{"status"}, flags...)...)
	wantLine(t, r, n.label, fmt.Sprintf("version %d (zodan 9.9.9), newer than this build (version %s, zodan %s): its procedures are not checked; use the zodan-install of that release",
		install.Latest()+1, latest, zodan.Version))
	for _, cmd := range [][]string{{"install"}, {"downgrade", "--to", first.Version}, {"uninstall"}} {
		r = run(t, append(cmd, flags...)...)
		want := fmt.Sprintf("FAILED: installed version %d (zodan 9.9.9) is newer than this build's %s (zodan %s); use the zodan-install of zodan 9.9.9", install.Latest()+1, latest, zodan.Version)
		if r.code != 1 || !strings.Contains(r.stdout, n.label+": "+want) {
			t.Errorf("%s on a newer node: want exit 1 and %q\n%s", cmd[0], want, r)
		}
	}
}

func TestToTakesReleasesAndVersions(t *testing.T) {
	t.Parallel()
	known := fmt.Sprintf("this build knows versions 0 to %s and releases %s", latest, install.ReleaseList())
	for _, c := range []struct {
		to, want string
	}{
		{"9.9.9", "--to 9.9.9: no such release; " + known},
		{"v1", `--to "v1" is neither a release nor a version number; ` + known},
		{"99", "--to 99: " + known},
		{"-1", "--to -1: " + known},
	} {
		r := run(t, "downgrade", "--to", c.to, "--schema", testSchema, "--dsn", "host=127.0.0.1 port=1")
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("--to %s: want exit 2 and %q\n%s", c.to, c.want, r)
		}
	}
}

func TestVersionListsReleases(t *testing.T) {
	t.Parallel()
	r := runOK(t, "--version")
	want := fmt.Sprintf("zodan-install version %s (installs version %s; releases: %s)\n", zodan.Version, latest, install.ReleaseList())
	if r.stdout != want {
		t.Errorf("--version: %q, want %q", r.stdout, want)
	}
	r = runOK(t, "--help")
	if !strings.Contains(r.stdout, "this build knows releases") || !strings.Contains(r.stdout, install.ReleaseList()) {
		t.Errorf("--help does not list the releases:\n%s", r)
	}
}

// An unknown flag or command is answered as zodan answers one: one
// message on stderr (and how to get help), nothing on stdout, exit 2.
func TestUnknownFlagAnsweredLikeZodan(t *testing.T) {
	t.Parallel()
	var zo, ze bytes.Buffer
	zcode := zodancli.Main([]string{"zodan", "--bogus"}, &zo, &ze)
	zodanSays := strings.TrimPrefix(ze.String(), "zodan: ")
	if zcode != 2 || zo.Len() != 0 || zodanSays == ze.String() {
		t.Fatalf("zodan --bogus: exit %d\nstdout:\n%s\nstderr:\n%s", zcode, zo.String(), ze.String())
	}
	for _, args := range [][]string{{"--bogus"}, {"install", "--bogus"}, {"status", "--bogus"}} {
		r := run(t, args...)
		if r.code != 2 || r.stdout != "" || r.stderr != "zodan-install: "+zodanSays {
			t.Errorf("want exit 2, no stdout, and stderr %q (as zodan's):\n%s", "zodan-install: "+zodanSays, r)
		}
	}
	r := run(t, "bogus")
	want := "zodan-install: unknown command \"bogus\"; the commands are render, install, status, downgrade, upgrade, uninstall\n  (run with --help for usage)\n"
	if r.code != 2 || r.stdout != "" || r.stderr != want {
		t.Errorf("unknown command: want exit 2 and %q\n%s", want, r)
	}
}
