package zodancli

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/zodan-project/zodan/internal/events"
)

// The records of --json output, one JSON object per line on stdout.
// Field names are part of zodan's interface: add fields, never rename.

type eventRecord struct {
	Type       events.Type `json:"type"`
	Operation  string      `json:"operation,omitempty"`
	Node       string      `json:"node,omitempty"`
	Phase      string      `json:"phase,omitempty"`
	PhaseNo    int         `json:"phase_no,omitempty"`
	PhaseTotal int         `json:"phase_total,omitempty"`
	Outcome    string      `json:"outcome,omitempty"`
	// Seconds is the phase's duration, for phase_done and phase_skipped.
	Seconds *float64 `json:"seconds,omitempty"`
	Message string   `json:"message"`
	// Elapsed is seconds since zodan started.
	Elapsed float64 `json:"elapsed"`
}

type resultRecord struct {
	Type     string        `json:"type"` // always "result"
	OK       bool          `json:"ok"`
	ExitCode int           `json:"exit_code"`
	Elapsed  float64       `json:"elapsed"`
	Phases   []phaseRecord `json:"phases"`
	Warnings []string      `json:"warnings,omitempty"`
	Error    *errorRecord  `json:"error,omitempty"`
}

type phaseRecord struct {
	Phase   string  `json:"phase"`
	PhaseNo int     `json:"phase_no"`
	Seconds float64 `json:"seconds"`
	Outcome string  `json:"outcome"`
}

type errorRecord struct {
	SQLState string `json:"sqlstate"`
	Message  string `json:"message"`
	Detail   string `json:"detail"`
	Hint     string `json:"hint"`
	// Advice is zodan's own: what state the cluster may be in, what next.
	Advice string `json:"advice,omitempty"`
}

// jsonWriter writes one record per line.
type jsonWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newJSONWriter(w io.Writer) *jsonWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "->" and "<new_node_dsn>" stay readable
	return &jsonWriter{enc: enc}
}

func (w *jsonWriter) write(v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(v) // nowhere better to report a broken stdout
}

// jsonOutput is the output of --json. Only records go to stdout; what
// is meant for a person watching goes to stderr.
type jsonOutput struct {
	w      *jsonWriter
	stderr io.Writer
}

func newJSONOutput(stdout, stderr io.Writer) *jsonOutput {
	return &jsonOutput{w: newJSONWriter(stdout), stderr: stderr}
}

func (o *jsonOutput) cancelling(proc string) {
	fmt.Fprintln(o.stderr, cancellingText(proc))
}

func (o *jsonOutput) begin(string, string) {}
func (o *jsonOutput) calling(string)       {}

func (o *jsonOutput) installNote(msg string, at time.Duration) {
	o.w.write(eventRecord{Type: events.Install, Message: msg, Elapsed: seconds(at)})
}

func (o *jsonOutput) event(e events.Event, at time.Duration) {
	r := eventRecord{Type: e.Type, Operation: e.Operation, Node: e.Node, Phase: e.Phase, PhaseNo: e.PhaseNo,
		PhaseTotal: e.PhaseTotal, Outcome: e.Outcome, Message: e.Message, Elapsed: seconds(at)}
	if (e.Type == events.PhaseDone || e.Type == events.PhaseSkipped) && e.Seconds >= 0 {
		s := e.Seconds
		r.Seconds = &s
	}
	o.w.write(r)
}

func (o *jsonOutput) finish(s summary) {
	r := resultRecord{Type: "result", OK: s.outcome.code == exitOK, ExitCode: s.outcome.code,
		Elapsed: seconds(s.elapsed), Phases: []phaseRecord{}, Warnings: s.warnings, Error: s.outcome.record}
	for _, p := range s.phases {
		r.Phases = append(r.Phases, phaseRecord{Phase: p.Name, PhaseNo: p.No, Seconds: round3(p.Seconds), Outcome: p.Outcome})
	}
	o.w.write(r)
}

func seconds(d time.Duration) float64 { return round3(d.Seconds()) }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
