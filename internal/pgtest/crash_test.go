package pgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A server process that dies by a signal is reported: the log line
// always, and where the kernel wrote the core into the data directory and
// gdb is installed, the backtrace read from it.
func TestCrashReport(t *testing.T) {
	c := Start(t, Options{Name: "crash"})
	if got := c.CrashReport(); got != "" {
		t.Fatalf("a fresh cluster reports a crash:\n%s", got)
	}
	conn := c.Connect(t, "postgres")
	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSEGV); err != nil {
		t.Fatalf("sending SIGSEGV to backend %d: %v", pid, err)
	}
	// The postmaster logs the crash, ends every session and recovers.
	deadline := time.Now().Add(time.Minute)
	for len(c.CrashLines()) == 0 || !strings.Contains(c.ReadLog(), "all server processes terminated; reinitializing") {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log the crash:\n%s", c.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	report := c.CrashReport()
	t.Logf("crash report:\n%s", report)
	if !strings.Contains(report, "crash: ") || !strings.Contains(report, "was terminated by signal 11") {
		t.Errorf("the report does not give the server log's line for the crash:\n%s", report)
	}
	if lines := c.CrashLines(); len(lines) != 1 {
		t.Errorf("CrashLines = %q, want the one crash", lines)
	}
	cores, _ := filepath.Glob(filepath.Join(c.DataDir, "core*"))
	if len(cores) == 0 {
		pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
		t.Logf("no core file in the data directory (core_pattern %q): the backtrace part is not checked", strings.TrimSpace(string(pattern)))
		return
	}
	if _, err := exec.LookPath("gdb"); err != nil {
		if !strings.Contains(report, "install gdb for its backtrace") {
			t.Errorf("without gdb, the report does not say how to get a backtrace:\n%s", report)
		}
		return
	}
	if !strings.Contains(report, "Program terminated with signal SIGSEGV") || !strings.Contains(report, "#0 ") {
		t.Errorf("the report has no backtrace from %s:\n%s", cores[0], report)
	}
}
