package events_test

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/events"
)

func ExampleFromNotice() {
	e := events.FromNotice(&pgconn.Notice{Severity: "NOTICE", Code: "ZD002",
		Message: "[add_node n4] phase 3/10 prepare-peers: done in 2.99 s"})
	fmt.Println(e.Type, e.Node, e.PhaseNo, e.Phase, e.Outcome, e.Seconds)
	// Output: phase_done n4 3 prepare-peers done 2.99
}
