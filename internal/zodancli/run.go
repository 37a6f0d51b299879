package zodancli

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/zodan-project/zodan/internal/dbconn"
	"github.com/zodan-project/zodan/internal/dsn"
)

// closeTimeout bounds saying goodbye to a server that may be gone.
const closeTimeout = 5 * time.Second

// runOperation connects to the node, makes sure it has the procedures,
// runs the CALL while reporting its NOTICEs, and reports how it ended.
func runOperation(c *cli.Context, op operation) error {
	var out output
	if op.settings.json {
		out = newJSONOutput(c.App.Writer, c.App.ErrWriter)
	} else {
		out = newTextOutput(c.App.Writer, c.App.ErrWriter, isTerminal(c.App.Writer), wantColor(c.App.Writer))
	}
	p := newProgress(out)
	out.begin(op.title, dsn.Label(op.dsn))

	reached, err := call(c.Context, op, p)
	o := classify(c.Context, err, reached, op)
	p.finish(op.title, o)
	if o.code == exitOK {
		return nil
	}
	msg := o.description
	if o.advice != "" {
		msg += "\n" + o.advice
	}
	return &exitError{code: o.code, msg: msg, resultWritten: op.settings.json}
}

// call does the work and tells how far it got.
func call(ctx context.Context, op operation, p *progress) (stage, error) {
	var gate noticeGate
	conn, err := dbconn.Connect(ctx, op.dsn, dbconn.Options{ApplicationName: "zodan", OnNotice: gate.handle, CancelGrace: cancelGrace})
	if err != nil {
		return stageConnect, err
	}
	defer closeConn(ctx, conn)

	if err := ensureProcedures(ctx, conn, op, p.installNote); err != nil {
		return stageInstall, err
	}
	gate.open(p.notice)
	p.out.calling(op.proc)
	stopWatching := watchForCancel(ctx, func() { p.cancelling(op.proc) })
	// Exec sends the arguments as bind parameters (extended protocol):
	// the statement text the server may log holds no DSN.
	_, err = conn.Exec(ctx, op.statement(), op.values()...)
	stopWatching()
	return stageCall, err
}

// watchForCancel calls onCancel if ctx ends before the returned stop is
// called; stop waits for onCancel to finish, so that nothing is printed
// after the run's summary.
func watchForCancel(ctx context.Context, onCancel func()) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			onCancel()
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}
