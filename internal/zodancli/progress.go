package zodancli

import (
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dsn"
	"github.com/zodan-project/zodan/internal/events"
)

// output is where a run's progress goes: text for people, JSON lines for
// programs.
type output interface {
	// begin announces the operation and the node zodan connects to.
	begin(title, label string)
	// installNote reports what zodan did about the procedures on the node.
	installNote(msg string, at time.Duration)
	// calling is called when the CALL starts.
	calling(proc string)
	// cancelling reports that the user cancelled (Ctrl-C) while the
	// CALL runs: the server may take a while to stop and roll back.
	cancelling(proc string)
	// event reports one NOTICE of the procedure.
	event(e events.Event, at time.Duration)
	// finish reports how the run ended.
	finish(s summary)
}

// summary is how a run ended, for the closing report.
type summary struct {
	title    string
	outcome  outcome
	elapsed  time.Duration
	phases   []events.Phase
	warnings []string
	// checksPassed and checksFailed count health check PASS/FAIL lines.
	checksPassed, checksFailed int
}

// progress follows a run: it timestamps the procedure's NOTICEs, keeps
// the phase timeline and the warnings, and passes everything on to the
// output. NOTICEs arrive on the goroutine running the CALL.
type progress struct {
	mu       sync.Mutex
	start    time.Time
	out      output
	timeline events.Timeline
	warnings []string
	passed   int
	failed   int
}

func newProgress(out output) *progress {
	return &progress{start: time.Now(), out: out}
}

func (p *progress) elapsed() time.Duration { return time.Since(p.start) }

// notice handles one NOTICE or WARNING from the server.
func (p *progress) notice(n *pgconn.Notice) {
	e := events.FromNotice(n)
	// The procedures redact DSNs themselves; this is the second line of
	// defence for anything that slips through (dblink, extensions).
	e.Message = dsn.Mask(e.Message)
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.elapsed()
	p.timeline.Observe(e, at)
	switch {
	case e.Type == events.Warning:
		p.warnings = append(p.warnings, e.Message)
	// Only health_check reports every check; add_node shows the
	// passed ones only when verbose, so counting them would mislead.
	case e.Operation == "health_check" && strings.HasPrefix(e.Message, "PASS "):
		p.passed++
	case e.Operation == "health_check" && strings.HasPrefix(e.Message, "FAIL "):
		p.failed++
	}
	p.out.event(e, at)
}

func (p *progress) installNote(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.installNote(dsn.Mask(msg), p.elapsed())
}

func (p *progress) cancelling(proc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.cancelling(proc)
}

// finish closes the phases still running and reports the end of the run.
func (p *progress) finish(title string, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.elapsed()
	if o.code != exitOK {
		p.timeline.End(at, o.phaseOutcome)
	}
	p.out.finish(summary{title: title, outcome: o, elapsed: at, phases: p.timeline.Phases(),
		warnings: p.warnings, checksPassed: p.passed, checksFailed: p.failed})
}
