package events

import (
	"reflect"
	"testing"
	"time"
)

func TestTimelineFollowsPhases(t *testing.T) {
	var tl Timeline
	s := time.Second
	tl.Observe(Event{Type: PhaseStart, Phase: "checks", PhaseNo: 1, PhaseTotal: 10}, 0)
	tl.Observe(Event{Type: Report, Message: "FAIL x"}, s/2) // not a phase event
	tl.Observe(Event{Type: PhaseDone, Phase: "checks", PhaseNo: 1, PhaseTotal: 10, Outcome: "done", Seconds: 0.25}, s)
	tl.Observe(Event{Type: PhaseStart, Phase: "register", PhaseNo: 2, PhaseTotal: 10}, s)
	tl.Observe(Event{Type: PhaseDone, Phase: "register", PhaseNo: 2, PhaseTotal: 10, Outcome: "done", Seconds: -1}, 3*s)
	tl.Observe(Event{Type: PhaseSkipped, Phase: "hand-over", PhaseNo: 6, PhaseTotal: 10, Outcome: "skipped"}, 3*s)
	tl.Observe(Event{Type: PhaseStart, Phase: "copy", PhaseNo: 4, PhaseTotal: 10}, 4*s)
	if p, ok := tl.Running(); !ok || p.Name != "copy" || p.Started != 4*s {
		t.Fatalf("Running() = %+v, %v; want copy, started at 4s", p, ok)
	}
	tl.End(10*s, OutcomeCancelled)
	if _, ok := tl.Running(); ok {
		t.Error("a phase still runs after End")
	}
	want := []Phase{
		{No: 1, Total: 10, Name: "checks", Outcome: "done", Started: 0, Seconds: 0.25}, // the server's figure
		{No: 2, Total: 10, Name: "register", Outcome: "done", Started: s, Seconds: 2},  // measured
		{No: 6, Total: 10, Name: "hand-over", Outcome: "skipped", Started: 3 * s},
		{No: 4, Total: 10, Name: "copy", Outcome: "cancelled", Started: 4 * s, Seconds: 6},
	}
	if got := tl.Phases(); !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %+v\nwant %+v", got, want)
	}
}

func TestTimelineEndLeavesFinishedPhasesAlone(t *testing.T) {
	var tl Timeline
	tl.Observe(Event{Type: PhaseStart, Phase: "checks", PhaseNo: 1, PhaseTotal: 5}, 0)
	tl.Observe(Event{Type: PhaseDone, Phase: "checks", PhaseNo: 1, PhaseTotal: 5, Outcome: "done", Seconds: 1}, time.Second)
	tl.End(5*time.Second, OutcomeFailed)
	if got := tl.Phases(); len(got) != 1 || got[0].Outcome != "done" || got[0].Seconds != 1 {
		t.Errorf("End changed a finished phase: %+v", got)
	}
}
