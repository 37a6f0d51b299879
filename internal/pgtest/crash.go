package pgtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Servers start with core files enabled (pg_ctl -c), so a server process
// that crashes leaves a core in its data directory; with the kernel's
// default core_pattern ("core") that is where it lands.

// CrashLines returns the server log lines that report a crashed server
// process ("terminated by signal") or a PANIC, each prefixed with the
// cluster's name.
func (c *Cluster) CrashLines() []string {
	var out []string
	for _, line := range strings.Split(c.ReadLog(), "\n") {
		if strings.Contains(line, "terminated by signal") || strings.Contains(line, "PANIC:") {
			out = append(out, c.Name+": "+strings.TrimSpace(line))
		}
	}
	return out
}

// CrashReport describes every crash of this cluster's server processes:
// the log lines, then for each core file in the data directory the
// backtrace gdb reads from it (when gdb is installed), which is what a
// bug report to the crashing extension needs. It is "" when nothing
// crashed.
func (c *Cluster) CrashReport() string {
	lines := c.CrashLines()
	cores, _ := filepath.Glob(filepath.Join(c.DataDir, "core*"))
	if len(lines) == 0 && len(cores) == 0 {
		return ""
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s\n", l)
	}
	gdb, gdbErr := exec.LookPath("gdb")
	for _, core := range cores {
		if gdbErr != nil {
			fmt.Fprintf(&b, "core file %s (install gdb for its backtrace)\n", core)
			continue
		}
		out, err := exec.Command(gdb, "-batch", "-nx", "-ex", "bt 40",
			filepath.Join(c.binDir, "postgres"), core).CombinedOutput()
		fmt.Fprintf(&b, "backtrace from %s:\n%s", core, backtraceOnly(string(out)))
		if err != nil {
			fmt.Fprintf(&b, "(gdb: %v)\n", err)
		}
	}
	return b.String()
}

// backtraceOnly keeps, of gdb's output, the process and signal and the
// frames, without its banner (and without the first frame's second
// mention: gdb names it on loading the core and again in the backtrace).
func backtraceOnly(out string) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if seen[l] {
			continue
		}
		seen[l] = true
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "Core was generated") || strings.HasPrefix(l, "Program terminated") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
