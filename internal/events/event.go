// Package events turns the NOTICEs that zodan's procedures send into
// typed progress events, and follows the phases of an operation.
//
// The procedures mark every progress NOTICE with a SQLSTATE of class ZD
// and a message of the form "[<kind> <node>] <text>" (see
// templates/operation.sql.tmpl), so a program can tell phases, waits and
// reports apart without guessing from prose.
package events

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Type says what an event is. The values are the "type" field of the
// zodan CLI's JSON output, so they are part of its interface.
type Type string

// Event types. Install is not sent by the server: the CLI reports with it
// that it installed the procedures before calling them.
const (
	PhaseStart   Type = "phase_start"   // ZD001
	PhaseDone    Type = "phase_done"    // ZD002
	PhaseSkipped Type = "phase_skipped" // ZD003
	Waiting      Type = "waiting"       // ZD004, every 30 s of a long wait
	Report       Type = "report"        // ZD005: PASS/FAIL lines, final listing
	Message      Type = "message"       // ZD006, and NOTICEs zodan did not send
	Detail       Type = "detail"        // ZD009, only sent when verbose
	Warning      Type = "warning"       // any WARNING (zodan's carry ZD010)
	Install      Type = "install"
)

// SQLSTATEs of the procedures' NOTICEs.
const (
	CodePhaseStart   = "ZD001"
	CodePhaseDone    = "ZD002"
	CodePhaseSkipped = "ZD003"
	CodeWaiting      = "ZD004"
	CodeReport       = "ZD005"
	CodeMessage      = "ZD006"
	CodeDetail       = "ZD009"
	CodeWarning      = "ZD010"
)

var typeByCode = map[string]Type{
	CodePhaseStart:   PhaseStart,
	CodePhaseDone:    PhaseDone,
	CodePhaseSkipped: PhaseSkipped,
	CodeWaiting:      Waiting,
	CodeReport:       Report,
	CodeMessage:      Message,
	CodeDetail:       Detail,
	CodeWarning:      Warning,
}

// Event is one progress report of an operation.
type Event struct {
	Type Type
	// Operation and Node come from the "[add_node n4]" prefix; both are
	// empty for NOTICEs that zodan's procedures did not send.
	Operation string
	Node      string
	// Phase, PhaseNo and PhaseTotal are set for the phase_* types.
	Phase      string
	PhaseNo    int
	PhaseTotal int
	// Outcome ("done", "skipped", ...) and Seconds (the phase's duration
	// as measured by the server) are set for phase_done and phase_skipped.
	Outcome string
	Seconds float64
	// Message is the text without the "[kind node]" prefix.
	Message string
	// Severity is the server's (NOTICE, WARNING, ...) and SQLState the
	// NOTICE's code, for messages zodan did not send.
	Severity string
	SQLState string
}

// Foreign reports whether the NOTICE did not come from zodan's progress
// protocol (for instance one from an extension).
func (e Event) Foreign() bool { return e.Operation == "" }

var (
	// "[add_node n4] text"; node names are Spock node names, which hold
	// no "]".
	prefixRE = regexp.MustCompile(`^\[(add_node|remove_node|health_check) ([^\]]*)\] ?`)
	// "phase 3/10 prepare-peers: text"
	phaseRE = regexp.MustCompile(`^phase (\d+)/(\d+) ([^:\s]+): (.*)$`)
	// the text of a finished phase: "done in 2.99 s"
	finishedRE = regexp.MustCompile(`^(\S+) in (\d+(?:\.\d+)?) s$`)
)

// FromNotice classifies a NOTICE or WARNING the server sent.
func FromNotice(n *pgconn.Notice) Event {
	e := Event{Type: typeByCode[n.Code], Message: n.Message, Severity: severity(n), SQLState: n.Code}
	if m := prefixRE.FindStringSubmatch(n.Message); m != nil {
		e.Operation, e.Node = m[1], m[2]
		e.Message = n.Message[len(m[0]):]
	}
	switch {
	case e.Severity == "WARNING":
		// Every warning must stand out, whoever raised it.
		e.Type = Warning
	case e.Type == "" || e.Foreign():
		e.Type = Message
	}
	if e.Type == Detail {
		// The procedures indent details under the line they belong to;
		// the CLI does its own indenting.
		e.Message = strings.TrimLeft(e.Message, " ")
	}
	if e.Type == PhaseStart || e.Type == PhaseDone || e.Type == PhaseSkipped {
		parsePhase(&e)
	}
	return e
}

// parsePhase fills in the phase fields, or demotes the event to a plain
// message when its text does not follow the protocol: a malformed line
// must not break the timeline.
func parsePhase(e *Event) {
	m := phaseRE.FindStringSubmatch(e.Message)
	if m == nil {
		e.Type = Message
		return
	}
	e.PhaseNo, _ = strconv.Atoi(m[1])
	e.PhaseTotal, _ = strconv.Atoi(m[2])
	e.Phase = m[3]
	if e.Type == PhaseStart {
		return
	}
	if f := finishedRE.FindStringSubmatch(m[4]); f != nil {
		e.Outcome = f[1]
		e.Seconds, _ = strconv.ParseFloat(f[2], 64)
		return
	}
	e.Outcome = map[Type]string{PhaseDone: "done", PhaseSkipped: "skipped"}[e.Type]
	e.Seconds = -1 // unknown; the timeline measures it
}

func severity(n *pgconn.Notice) string {
	if n.SeverityUnlocalized != "" {
		return n.SeverityUnlocalized
	}
	return n.Severity
}
