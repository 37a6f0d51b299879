package zodancli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/zodan-project/zodan/internal/events"
)

// ANSI sequences, used only on terminals.
const (
	clearLine   = "\r\x1b[K"
	styleWarn   = "\x1b[1;33m"
	styleFail   = "\x1b[1;31m"
	styleOK     = "\x1b[1;32m"
	styleReset  = "\x1b[0m"
	redrawEvery = 200 * time.Millisecond
)

// textOutput prints progress for people: one line per NOTICE with the
// time since start, and on a terminal a live status line below them
// that shows the running phase and how long it has been running.
type textOutput struct {
	mu        sync.Mutex
	out, err  io.Writer
	live      bool // draw the status line
	color     bool
	start     time.Time
	proc      string
	phase     string // "phase 4/10 copy" while one runs
	phaseFrom time.Time
	drawn     bool // the status line is on screen
	spin      int
	stop      chan struct{}
	stopped   chan struct{}
}

func newTextOutput(stdout, stderr io.Writer, live, color bool) *textOutput {
	return &textOutput{out: stdout, err: stderr, live: live, color: color, start: time.Now()}
}

func (o *textOutput) begin(title, label string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.out, "%s, running on %s\n", title, label)
}

func (o *textOutput) installNote(msg string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clear()
	fmt.Fprintln(o.err, "zodan: "+msg)
	o.draw()
}

// calling starts the status line: the CALL can run for hours.
func (o *textOutput) calling(proc string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.proc, o.phaseFrom = proc, time.Now()
	if !o.live || o.stop != nil {
		return
	}
	o.stop, o.stopped = make(chan struct{}), make(chan struct{})
	go o.redraw(o.stop, o.stopped)
}

func (o *textOutput) redraw(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			o.mu.Lock()
			o.spin++
			o.draw()
			o.mu.Unlock()
		}
	}
}

func (o *textOutput) cancelling(proc string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clear()
	fmt.Fprintln(o.err, cancellingText(proc))
	o.phase, o.phaseFrom = "cancelling "+proc, time.Now()
	o.draw()
}

// cancellingText answers the Ctrl-C at once: the server's answer can
// take a while when add_node rolls back.
func cancellingText(proc string) string {
	return fmt.Sprintf("zodan: cancelling: the server was asked to stop %s; waiting for it to confirm (and roll back what it did)", proc)
}

func (o *textOutput) event(e events.Event, at time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch e.Type {
	case events.PhaseStart:
		o.phase, o.phaseFrom = fmt.Sprintf("phase %d/%d %s", e.PhaseNo, e.PhaseTotal, e.Phase), time.Now()
	case events.PhaseDone, events.PhaseSkipped:
		o.phase, o.phaseFrom = "", time.Now()
	}
	o.clear()
	o.printLine(at, lineText(e), o.styleOf(e))
	o.draw()
}

// lineText is how an event reads on its line.
func lineText(e events.Event) string {
	switch {
	case e.Type == events.Warning:
		return "WARNING: " + e.Message
	case e.Type == events.Detail:
		return "  " + e.Message
	case e.Foreign():
		return e.Severity + ": " + e.Message
	}
	return e.Message
}

func (o *textOutput) styleOf(e events.Event) string {
	if !o.color {
		return ""
	}
	switch {
	case e.Type == events.Warning:
		return styleWarn
	case e.Type == events.Report && strings.HasPrefix(e.Message, "FAIL "):
		return styleFail
	}
	return ""
}

// printLine prints text after the elapsed time, continuation lines
// indented under the first.
func (o *textOutput) printLine(at time.Duration, text, style string) {
	stamp := fmt.Sprintf("[%6.1fs] ", at.Seconds())
	text = strings.ReplaceAll(text, "\n", "\n"+strings.Repeat(" ", len(stamp)))
	if style != "" {
		text = style + text + styleReset
	}
	fmt.Fprintln(o.out, stamp+text)
}

// draw shows the status line; the caller holds o.mu.
func (o *textOutput) draw() {
	if !o.live || o.stop == nil {
		return
	}
	now := time.Now()
	what := o.phase
	if what == "" {
		what = o.proc + " running"
	}
	spinner := `|/-\`[o.spin%4]
	fmt.Fprintf(o.out, "%s%c %s: %s (total %s)", clearLine, spinner, what,
		secs(now.Sub(o.phaseFrom)), secs(now.Sub(o.start)))
	o.drawn = true
}

// clear removes the status line so that a printed line replaces it; the
// caller holds o.mu.
func (o *textOutput) clear() {
	if o.drawn {
		fmt.Fprint(o.out, clearLine)
		o.drawn = false
	}
}

func (o *textOutput) stopStatus() {
	o.mu.Lock()
	stop, stopped := o.stop, o.stopped
	o.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-stopped
	o.mu.Lock()
	o.clear()
	o.stop = nil
	o.mu.Unlock()
}

func (o *textOutput) finish(s summary) {
	o.stopStatus()
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\nSummary of %s:\n", s.title)
	width := 0
	for _, p := range s.phases {
		width = max(width, len(p.Name))
	}
	for _, p := range s.phases {
		fmt.Fprintf(&b, "  %2d/%-2d %-*s %8.2f s  %s\n", p.No, p.Total, width, p.Name, p.Seconds, p.Outcome)
	}
	if n := s.checksPassed + s.checksFailed; n > 0 {
		fmt.Fprintf(&b, "  checks: %d passed, %d failed\n", s.checksPassed, s.checksFailed)
	}
	if len(s.warnings) > 0 {
		fmt.Fprintf(&b, "  %d warning(s), repeated from above:\n", len(s.warnings))
		for _, w := range s.warnings {
			fmt.Fprintf(&b, "  %s\n", o.paint(styleWarn, "- "+strings.ReplaceAll(w, "\n", "\n    ")))
		}
	}
	b.WriteString("  result: " + o.resultText(s) + "\n")
	fmt.Fprint(o.out, b.String())
}

func (o *textOutput) resultText(s summary) string {
	took := secs(s.elapsed)
	switch s.outcome.code {
	case exitOK:
		return o.paint(styleOK, "succeeded in "+took)
	case exitCancelled:
		return o.paint(styleFail, fmt.Sprintf("CANCELLED after %s (exit code %d); what to do is on stderr", took, s.outcome.code))
	case exitHealthCheckFailed:
		return o.paint(styleFail, fmt.Sprintf("health check FAILED after %s (exit code %d); details on stderr", took, s.outcome.code))
	}
	return o.paint(styleFail, fmt.Sprintf("FAILED after %s (exit code %d); the error is on stderr", took, s.outcome.code))
}

func (o *textOutput) paint(style, text string) string {
	if !o.color {
		return text
	}
	return style + text + styleReset
}

// secs shows a duration to a tenth of a second: enough for people, and
// the same unit everywhere in the output.
func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
