package events

import "time"

// Outcomes of a phase besides the server's own ("done", "skipped").
const (
	OutcomeRunning   = "running"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled"
)

// Phase is one phase of an operation as far as it got.
type Phase struct {
	No, Total int
	Name      string
	// Outcome is "running" until the phase ends, then "done",
	// "skipped", "failed" or "cancelled".
	Outcome string
	// Started is when the phase started, counted from the start of the
	// operation as the caller measures it.
	Started time.Duration
	// Seconds is how long the phase took: the server's figure when it
	// sent one, else the time between the events the caller saw.
	Seconds float64
}

// Timeline follows the phases of one operation from its events. The zero
// value is ready to use. It is not safe for concurrent use.
type Timeline struct {
	phases []Phase
}

// Observe records event e, seen at the given time since the operation
// started. Events other than the phase_* types are ignored.
func (t *Timeline) Observe(e Event, at time.Duration) {
	switch e.Type {
	case PhaseStart:
		p := t.find(e.PhaseNo)
		*p = Phase{No: e.PhaseNo, Total: e.PhaseTotal, Name: e.Phase, Outcome: OutcomeRunning, Started: at}
	case PhaseDone, PhaseSkipped:
		p := t.find(e.PhaseNo)
		if p.Outcome == "" { // ended without a start we saw
			*p = Phase{No: e.PhaseNo, Total: e.PhaseTotal, Name: e.Phase, Started: at}
		}
		p.Outcome = e.Outcome
		p.Seconds = e.Seconds
		if p.Seconds < 0 {
			p.Seconds = (at - p.Started).Seconds()
		}
	}
}

// find returns the phase numbered no, appending an empty one when it is
// new. Phases are kept in the order they started.
func (t *Timeline) find(no int) *Phase {
	for i := range t.phases {
		if t.phases[i].No == no {
			return &t.phases[i]
		}
	}
	t.phases = append(t.phases, Phase{No: no})
	return &t.phases[len(t.phases)-1]
}

// Running returns the phase that started last and has not ended.
func (t *Timeline) Running() (Phase, bool) {
	for i := len(t.phases) - 1; i >= 0; i-- {
		if t.phases[i].Outcome == OutcomeRunning {
			return t.phases[i], true
		}
	}
	return Phase{}, false
}

// End closes the phases still running at the given time with outcome
// (failed or cancelled when the operation did not succeed).
func (t *Timeline) End(at time.Duration, outcome string) {
	for i := range t.phases {
		if t.phases[i].Outcome == OutcomeRunning {
			t.phases[i].Outcome = outcome
			t.phases[i].Seconds = (at - t.phases[i].Started).Seconds()
		}
	}
}

// Phases returns the phases seen so far, in the order they started.
func (t *Timeline) Phases() []Phase {
	return append([]Phase(nil), t.phases...)
}
