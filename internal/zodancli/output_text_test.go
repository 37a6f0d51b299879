package zodancli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zodan-project/zodan/internal/events"
)

// On a terminal the status line sits below the printed lines: every line
// must first clear it, or the two would be mixed on screen.
func TestStatusLineIsClearedBeforeEachLineAndAtTheEnd(t *testing.T) {
	var out, errOut bytes.Buffer
	o := newTextOutput(&out, &errOut, true, false)
	o.begin("add_node n2 (source n1)", "db:5432/app")
	o.calling("add_node")
	defer o.stopStatus()

	redraw := func() { o.mu.Lock(); o.draw(); o.mu.Unlock() } // what the ticker does
	redraw()
	o.event(events.Event{Type: events.PhaseStart, Operation: "add_node", Phase: "copy", PhaseNo: 4, PhaseTotal: 10,
		Message: "phase 4/10 copy: schema and data from n1"}, 1500*time.Millisecond)
	redraw()
	if !regexp.MustCompile(`\r\x1b\[K[|/\\-] phase 4/10 copy: \d+\.\d s \(total \d+\.\d s\)$`).MatchString(out.String()) {
		t.Fatalf("the status line does not show the running phase: %q", out.String())
	}
	o.installNote("installed", time.Second)
	o.event(events.Event{Type: events.Warning, Operation: "add_node", Message: "careful"}, 2*time.Second)
	o.finish(summary{title: "add_node n2 (source n1)", elapsed: 3 * time.Second,
		phases: []events.Phase{{No: 4, Total: 10, Name: "copy", Outcome: "done", Seconds: 1}}})

	text := out.String()
	for _, line := range []string{"[   1.5s] phase 4/10 copy", "[   2.0s] WARNING: careful", "\nSummary of"} {
		i := strings.Index(text, line)
		if i < 0 {
			t.Fatalf("%q not printed: %q", line, text)
		}
		if line[0] == '[' && !strings.HasSuffix(text[:i], clearLine) {
			t.Errorf("%q printed without clearing the status line first: %q", line, text[:i])
		}
	}
	if strings.Count(text, clearLine) < 4 {
		t.Errorf("the status line was not cleared before the summary: %q", text)
	}
	if tail := text[strings.LastIndex(text, clearLine)+len(clearLine):]; !strings.HasPrefix(tail, "\nSummary of") {
		t.Errorf("something was drawn after the status line was cleared for good: %q", tail)
	}
	if errOut.String() != "zodan: installed\n" {
		t.Errorf("stderr: %q", errOut.String())
	}
}

func TestNoStatusLineWhenNotATerminal(t *testing.T) {
	var out bytes.Buffer
	o := newTextOutput(&out, &bytes.Buffer{}, isTerminal(&out), false)
	o.calling("add_node")
	o.mu.Lock()
	o.draw()
	o.mu.Unlock()
	o.event(events.Event{Type: events.Report, Operation: "add_node", Message: "n2 joined the cluster in 1.00 s"}, time.Second)
	o.finish(summary{title: "add_node n2"})
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "\x1b") {
		t.Errorf("terminal control in plain output: %q", out.String())
	}
}
