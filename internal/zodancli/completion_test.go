package zodancli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompletionScriptsArePrinted(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -F _zodan_complete zodan",
		"zsh":  "compdef _zodan zodan",
	} {
		r := runZodan(t, "completion", shell)
		if r.code != exitOK || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "--generate-bash-completion") {
			t.Errorf("completion %s\n%s", shell, r)
		}
	}
}

// The bash script, sourced in a real bash, completes commands and flags
// by asking a real zodan process (this test binary, acting as zodan).
func TestBashCompletesCommandsAndFlags(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "zodan")); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "zodan.bash")
	if err := os.WriteFile(script, []byte(runZodan(t, "completion", "bash").stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	// words typed, the last one being completed => candidates (flags
	// already given are not offered again)
	cases := map[string]string{
		`zodan ""`:                    "add-node add_node health-check health_check remove-node remove_node completion",
		`zodan rem`:                   "remove-node remove_node",
		`zodan add-node --new-node-l`: "--new-node-location",
		`zodan remove-node --target-node-name n4 ""`: "--target-dsn --target-node-dsn --run-on-dsn --verbose -v --timeout --json --no-install --schema --help -h",
		`zodan health-check --check-`:                "--check-type",
	}
	for words, want := range cases {
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `source "$1"; eval "COMP_WORDS=($2)"; COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _zodan_complete; echo "${COMPREPLY[*]}"`,
			"bash", script, words)
		cmd.Env = append(os.Environ(), asZodan+"=1", "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		got, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", words, err, got)
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("completing %s\n got %q\nwant %q", words, strings.TrimSpace(string(got)), want)
		}
	}
}
