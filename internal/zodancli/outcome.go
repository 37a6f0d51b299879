package zodancli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/dsn"
	"github.com/zodan-project/zodan/internal/events"
)

// SQLSTATEs that decide the exit code.
const (
	sqlstateHealthCheckFailed = "ZDH01"
	sqlstateQueryCanceled     = "57014"
)

// stage is how far a run got; it decides what a failure means for the
// cluster.
type stage int

const (
	stageConnect stage = iota
	stageInstall
	stageCall
)

// outcome is how a run ended.
type outcome struct {
	code int
	// description is the error as psql would show it (message, SQLSTATE,
	// DETAIL, HINT), passwords masked; "" on success.
	description string
	// advice tells what state the cluster may be in and what to do.
	advice string
	// phaseOutcome closes the phase that was running: failed or
	// cancelled.
	phaseOutcome string
	record       *errorRecord
}

// classify turns the error that ended a run at stage s into its exit
// code and the words for it.
func classify(ctx context.Context, err error, s stage, op operation) outcome {
	if err == nil {
		return outcome{code: exitOK}
	}
	var ee *exitError
	if errors.As(err, &ee) { // already worded, e.g. --no-install
		msg := dsn.Mask(ee.msg)
		return outcome{code: ee.code, description: msg, phaseOutcome: events.OutcomeFailed,
			record: &errorRecord{Message: firstLine(msg), Detail: restLines(msg)}}
	}
	o := outcome{code: exitFailed, description: dbconn.Describe(err), phaseOutcome: events.OutcomeFailed,
		record: &errorRecord{Message: dsn.Mask(err.Error())}}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		// Keep the context zodan wrapped around the server's error
		// ("installing ... on db1: ...").
		wrapped, _ := strings.CutSuffix(err.Error(), pg.Error())
		o.record = &errorRecord{SQLState: pg.Code, Message: dsn.Mask(wrapped + pg.Message),
			Detail: dsn.Mask(pg.Detail), Hint: dsn.Mask(pg.Hint)}
	}
	journal := fmt.Sprintf("%s.zodan_operations on %s", op.settings.schema, dsn.Label(op.dsn))
	switch {
	case ctx.Err() != nil || dbconn.SQLState(err) == sqlstateQueryCanceled:
		o.code, o.phaseOutcome = exitCancelled, events.OutcomeCancelled
		switch {
		case s < stageCall:
			o.advice = fmt.Sprintf("Cancelled before %s started: the cluster was not changed.", op.proc)
		case pg == nil:
			// The server did not answer the cancel request in time, and
			// the client gave up on the connection.
			o.advice = fmt.Sprintf("The server did not confirm the cancellation before zodan closed the connection, so %s may still be stopping or rolling back there: check SELECT * FROM %s before running anything else.\n%s",
				op.proc, journal, op.afterCancel(journal))
		default:
			o.advice = op.afterCancel(journal)
		}
	case dbconn.SQLState(err) == sqlstateHealthCheckFailed:
		o.code = exitHealthCheckFailed
	}
	o.record.Advice = o.advice
	return o
}

func restLines(s string) string {
	_, rest, _ := strings.Cut(s, "\n")
	return rest
}
