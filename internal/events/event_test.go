package events

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func notice(code, msg string) *pgconn.Notice {
	return &pgconn.Notice{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: code, Message: msg}
}

func TestFromNoticeReadsTheProtocol(t *testing.T) {
	cases := []struct {
		name   string
		notice *pgconn.Notice
		want   Event
	}{
		{"phase started", notice("ZD001", "[add_node n4] phase 3/10 prepare-peers: slots and disabled subscriptions for n2, n3"),
			Event{Type: PhaseStart, Operation: "add_node", Node: "n4", Phase: "prepare-peers", PhaseNo: 3, PhaseTotal: 10,
				Message: "phase 3/10 prepare-peers: slots and disabled subscriptions for n2, n3"}},
		{"phase done", notice("ZD002", "[add_node n4] phase 3/10 prepare-peers: done in 2.99 s"),
			Event{Type: PhaseDone, Operation: "add_node", Node: "n4", Phase: "prepare-peers", PhaseNo: 3, PhaseTotal: 10,
				Outcome: "done", Seconds: 2.99, Message: "phase 3/10 prepare-peers: done in 2.99 s"}},
		{"phase skipped", notice("ZD003", "[remove_node n2] phase 2/5 drain: skipped in 0.00 s"),
			Event{Type: PhaseSkipped, Operation: "remove_node", Node: "n2", Phase: "drain", PhaseNo: 2, PhaseTotal: 5,
				Outcome: "skipped", Seconds: 0, Message: "phase 2/5 drain: skipped in 0.00 s"}},
		{"phase done without a duration", notice("ZD002", "[add_node n4] phase 5/10 catch-up: finished"),
			Event{Type: PhaseDone, Operation: "add_node", Node: "n4", Phase: "catch-up", PhaseNo: 5, PhaseTotal: 10,
				Outcome: "done", Seconds: -1, Message: "phase 5/10 catch-up: finished"}},
		{"waiting", notice("ZD004", "[add_node n4] still waiting for n1: at 0/1 of 0/2 after 30.00 s"),
			Event{Type: Waiting, Operation: "add_node", Node: "n4", Message: "still waiting for n1: at 0/1 of 0/2 after 30.00 s"}},
		{"report", notice("ZD005", "[health_check n4] FAIL roles: n4 lacks app_rw"),
			Event{Type: Report, Operation: "health_check", Node: "n4", Message: "FAIL roles: n4 lacks app_rw"}},
		{"message", notice("ZD006", "[add_node n4] registered n1 as a Spock node"),
			Event{Type: Message, Operation: "add_node", Node: "n4", Message: "registered n1 as a Spock node"}},
		{"detail loses the procedure's indent", notice("ZD009", "[add_node n4]   PASS roles: fine"),
			Event{Type: Detail, Operation: "add_node", Node: "n4", Message: "PASS roles: fine"}},
		{"zodan's warning", &pgconn.Notice{Severity: "WARNUNG", SeverityUnlocalized: "WARNING", Code: "ZD010", Message: "[add_node n4] sets changed"},
			Event{Type: Warning, Operation: "add_node", Node: "n4", Message: "sets changed", Severity: "WARNING"}},
		{"someone else's warning", &pgconn.Notice{Severity: "WARNING", Code: "01000", Message: "zodan: could not update the operation journal"},
			Event{Type: Warning, Message: "zodan: could not update the operation journal", Severity: "WARNING"}},
		{"someone else's notice", notice("00000", "extension \"dblink\" already exists, skipping"),
			Event{Type: Message, Message: "extension \"dblink\" already exists, skipping"}},
		{"a ZD code without the prefix is not trusted", notice("ZD001", "phase 1/2 x: y"),
			Event{Type: Message, Message: "phase 1/2 x: y"}},
		{"a malformed phase line becomes a message", notice("ZD001", "[add_node n4] phase three: copy"),
			Event{Type: Message, Operation: "add_node", Node: "n4", Message: "phase three: copy"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := FromNotice(tc.notice)
			tc.want.SQLState = tc.notice.Code
			if tc.want.Severity == "" {
				tc.want.Severity = "NOTICE"
			}
			if got != tc.want {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
