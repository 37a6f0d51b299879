// Package render turns the embedded procedure templates into SQL.
//
// The templates are parsed once; rendering is a pure function of Options,
// so the same options always give byte-identical SQL (the installer
// records its checksum to detect drift).
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/zodan-project/zodan"
)

// Features describe the PostgreSQL and Spock a node runs, as far as the
// procedures depend on them.
type Features struct {
	// ServerVersionNum is server_version_num, e.g. 150018.
	ServerVersionNum int
	// ProgressLSN is the spock.progress column holding the LSN of the last
	// applied remote commit: remote_lsn in Spock 5.0, remote_commit_lsn
	// in later releases.
	ProgressLSN string
}

// Describe says what the procedures were rendered for, as zodan-install
// status shows it.
func (f Features) Describe() string {
	slots := "slots without failover"
	if f.ServerVersionNum >= 170000 {
		slots = "slots with failover, as Spock creates them on 17+"
	}
	return fmt.Sprintf("PostgreSQL %d (%s), spock.progress.%s", f.ServerVersionNum/10000, slots, f.ProgressLSN)
}

// PublicProcedures are the routines DBAs call, with upstream Zodan's names
// and signatures; every other routine is a helper named zodan_*, so that
// none can clash with Spock's own functions.
var PublicProcedures = []string{"add_node", "remove_node", "health_check", "check_spock_version_compatibility"}

// MinSpockVersion is the oldest Spock release the procedures support.
const MinSpockVersion = "5.0.9"

// DefaultFeatures are those of the supported baseline, PostgreSQL 15 with
// Spock 5.0; the committed psql script is rendered with them.
func DefaultFeatures() Features {
	return Features{ServerVersionNum: 150000, ProgressLSN: "remote_lsn"}
}

// Options control rendering. The zero value of a field means its default.
type Options struct {
	// Schema receives the procedures. Default: spock.
	Schema string
	// Dblink is the schema of the dblink extension. Default: public.
	Dblink string
	// SyncTimeout is how long a wait may go without progress when neither
	// the sync_timeout argument nor the spock.sync_timeout setting says
	// otherwise. Default: 10 minutes.
	SyncTimeout time.Duration
	// Features of the target node. Default: DefaultFeatures().
	Features Features
}

// Defaults for Options.
const (
	DefaultSchema      = "spock"
	DefaultDblink      = "public"
	DefaultSyncTimeout = 10 * time.Minute
)

// CompareMaxBytes is the size above which a table is not counted when a
// new node is compared with its source (add_node's last phase and
// health_check('post')): an exact count of a larger table takes long on
// both nodes, three times over.
const CompareMaxBytes = 1 << 30

// Cluster lock: pg_try_advisory_lock(LockKey1, LockKey2) on every node an
// operation touches. LockKey1 spells "zoda".
const (
	LockKey1 = 0x7a6f6461
	LockKey2 = 1
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidSchemaName reports whether name can hold the procedures: a plain
// lowercase identifier, so it needs no quoting anywhere it appears.
func ValidSchemaName(name string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("schema name %q is not a plain lowercase identifier (letters, digits, underscores, at most 63 characters, not starting with a digit)", name)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.Dblink == "" {
		o.Dblink = DefaultDblink
	}
	if o.SyncTimeout == 0 {
		o.SyncTimeout = DefaultSyncTimeout
	}
	if o.Features == (Features{}) {
		o.Features = DefaultFeatures()
	}
	return o
}

// templateData is what the templates see; field names are short because
// they appear on almost every line of SQL.
type templateData struct {
	S           string // schema of the procedures
	Schema      string // same, where prose reads better
	Dblink      string
	Version     string
	SyncTimeout int // seconds
	LockKey1    int
	LockKey2    int
	// CompareMaxBytes: tables larger than this on the source are not
	// counted when a new node is compared with it (see compare.sql.tmpl).
	CompareMaxBytes int64
	Features        templateFeatures
}

type templateFeatures struct {
	ServerMajor     int
	ProgressLSN     string
	MinSpockVersion string
}

var (
	parseOnce sync.Once
	parsed    *template.Template
	parseErr  error
)

func templates() (*template.Template, error) {
	parseOnce.Do(func() {
		parsed, parseErr = template.New("zodan").Option("missingkey=error").ParseFS(zodan.Templates(), "*.sql.tmpl")
	})
	return parsed, parseErr
}

// Procedures renders the complete procedure set: every CREATE FUNCTION and
// CREATE PROCEDURE, in dependency order, for opts.
func Procedures(opts Options) (string, error) {
	opts = opts.withDefaults()
	if err := ValidSchemaName(opts.Schema); err != nil {
		return "", err
	}
	if err := ValidSchemaName(opts.Dblink); err != nil {
		return "", fmt.Errorf("dblink extension: %w", err)
	}
	if opts.SyncTimeout < time.Second {
		return "", fmt.Errorf("sync timeout %s is shorter than a second", opts.SyncTimeout)
	}
	f := opts.Features
	if f.ProgressLSN != "remote_lsn" && f.ProgressLSN != "remote_commit_lsn" {
		return "", fmt.Errorf("unknown spock.progress LSN column %q", f.ProgressLSN)
	}
	t, err := templates()
	if err != nil {
		return "", fmt.Errorf("parsing embedded templates: %w", err)
	}
	data := templateData{
		S: opts.Schema, Schema: opts.Schema, Dblink: opts.Dblink,
		Version:     zodan.Version,
		SyncTimeout: int(opts.SyncTimeout / time.Second),
		LockKey1:    LockKey1, LockKey2: LockKey2,
		CompareMaxBytes: CompareMaxBytes,
		Features: templateFeatures{
			ServerMajor:     f.ServerVersionNum / 10000,
			ProgressLSN:     f.ProgressLSN,
			MinSpockVersion: MinSpockVersion,
		},
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "zodan.sql.tmpl", data); err != nil {
		return "", fmt.Errorf("rendering procedures: %w", err)
	}
	out := buf.String()
	// text/template prints "<no value>" for a missing map key; with
	// structs a missing field is a parse error, but keep the guard.
	if strings.Contains(out, "<no value>") {
		return "", fmt.Errorf("rendering procedures: a template referenced a value that was not provided")
	}
	return out, nil
}

// Checksum is the hex SHA-256 of rendered SQL, as recorded by the
// installer.
func Checksum(sql string) string {
	sum := sha256.Sum256([]byte(sql))
	return hex.EncodeToString(sum[:])
}
