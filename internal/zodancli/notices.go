package zodancli

import (
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// noticeGate passes the connection's NOTICEs on only once the CALL
// starts: those of the installer's DDL ("... does not exist, skipping")
// are noise to an operator.
type noticeGate struct {
	to atomic.Pointer[func(*pgconn.Notice)]
}

func (g *noticeGate) handle(n *pgconn.Notice) {
	if f := g.to.Load(); f != nil {
		(*f)(n)
	}
}

func (g *noticeGate) open(f func(*pgconn.Notice)) { g.to.Store(&f) }
