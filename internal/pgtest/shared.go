package pgtest

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// SharedPassword is the superuser password of the shared cluster. Tests
// assert that it never shows up in output or in the server log.
const SharedPassword = "pw-Zq7!never-print-me"

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the test binary's shared cluster (plain PostgreSQL with
// password authentication over TCP), starting it on first use. Tests get
// isolation from Database, not from a cluster each: initdb costs seconds,
// CREATE DATABASE milliseconds. TestMain must call StopShared.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() {
		c, err := New(Options{Name: "shared", Password: SharedPassword,
			Settings: map[string]string{"max_connections": "200", "log_connections": "on",
				"log_min_error_statement": "error"}})
		if err == nil {
			err = c.Start()
		}
		shared.c, shared.err = c, err
	})
	if shared.err != nil {
		t.Fatalf("pgtest: shared cluster: %v", shared.err)
	}
	return shared.c
}

// StopShared destroys the shared cluster if one was started.
func StopShared() {
	if shared.c != nil {
		_ = shared.c.Destroy()
	}
}

var dbSeq atomic.Int64
var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// Database creates a fresh database on c named after the test, with the
// dblink extension available, and drops it when the test ends.
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	name := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
	c.CreateDatabase(t, name)
	t.Cleanup(func() {
		if t.Failed() {
			return // keep it for a post-mortem while the cluster lives
		}
		c.Exec(t, "postgres", "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)")
	})
	return name
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
