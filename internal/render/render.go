// Package render turns the procedure templates into SQL.
//
// It works in two steps, so that a release's procedures can be frozen:
//
//   - Snapshot renders the templates into a tern code package: the complete
//     SQL of a release with everything baked in (version, lock keys, Spock
//     minimum, size limits) except the per-node install parameters, which
//     stay tern template placeholders ({{.schema}}, {{.dblink_schema}},
//     {{.sync_timeout_seconds}}, {{.server_major}}, {{.progress_lsn}}).
//     "make snapshot" writes it to sql/snapshots/<release>/install.sql,
//     where it never changes again.
//   - Eval evaluates a snapshot for one node, as tern does
//     (migrate.LoadCodePackage, CodePackage.Eval).
//
// Procedures(opts) is Eval(Snapshot(), opts), so what the templates render
// and what a snapshot of them installs can never disagree. Both are pure
// functions: the same options always give byte-identical SQL (the
// installer records its checksum to recognise releases and drift).
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing/fstest"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/jackc/tern/v2/migrate"

	"github.com/zodan-project/zodan"
)

// Features describe the PostgreSQL and Spock a node runs, as far as the
// procedures' text depends on them: only the header comment names them
// (slots get failover, and the progress column is chosen, at run time).
type Features struct {
	// ServerVersionNum is server_version_num, e.g. 150018.
	ServerVersionNum int
	// ProgressLSN is the spock.progress column holding the LSN of the last
	// applied remote commit: remote_lsn in Spock 5.0, remote_commit_lsn
	// in later releases.
	ProgressLSN string
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

// Options are the per-node install parameters. The zero value of a field
// means its default.
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

// The tern data keys a snapshot reads: the per-node install parameters.
const (
	KeySchema             = "schema"
	KeyDblinkSchema       = "dblink_schema"
	KeySyncTimeoutSeconds = "sync_timeout_seconds"
	KeyServerMajor        = "server_major"
	KeyProgressLSN        = "progress_lsn"
)

// Data checks opts and returns them as the tern data a snapshot is
// evaluated with (also part of the installer's migration data, so that
// tern's own install_snapshot would see the same values).
func (o Options) Data() (map[string]any, error) {
	o = o.withDefaults()
	if err := ValidSchemaName(o.Schema); err != nil {
		return nil, err
	}
	if err := ValidSchemaName(o.Dblink); err != nil {
		return nil, fmt.Errorf("dblink extension: %w", err)
	}
	if o.SyncTimeout < time.Second {
		return nil, fmt.Errorf("sync timeout %s is shorter than a second", o.SyncTimeout)
	}
	f := o.Features
	if f.ProgressLSN != "remote_lsn" && f.ProgressLSN != "remote_commit_lsn" {
		return nil, fmt.Errorf("unknown spock.progress LSN column %q", f.ProgressLSN)
	}
	return map[string]any{
		KeySchema:             o.Schema,
		KeyDblinkSchema:       o.Dblink,
		KeySyncTimeoutSeconds: int(o.SyncTimeout / time.Second),
		KeyServerMajor:        f.ServerVersionNum / 10000,
		KeyProgressLSN:        f.ProgressLSN,
	}, nil
}

// templateData is what the templates see; field names are short because
// they appear on almost every line of SQL. The per-node fields (nodeParams)
// hold placeholders when a snapshot is rendered: the templates may print
// them, never compute with them (see lift).
type templateData struct {
	S           string // schema of the procedures
	Schema      string // same, where prose reads better
	Dblink      string
	Version     string
	SyncTimeout string // seconds
	LockKey1    int
	LockKey2    int
	// CompareMaxBytes: tables larger than this on the source are not
	// counted when a new node is compared with it (see compare.sql.tmpl).
	CompareMaxBytes int64
	Features        templateFeatures
}

type templateFeatures struct {
	ServerMajor     string
	ProgressLSN     string
	MinSpockVersion string
}

// nodeParams maps the per-node fields of templateData to the tern data
// keys that replace them in a snapshot.
var nodeParams = map[string]string{
	"S":                    KeySchema,
	"Schema":               KeySchema,
	"Dblink":               KeyDblinkSchema,
	"SyncTimeout":          KeySyncTimeoutSeconds,
	"Features.ServerMajor": KeyServerMajor,
	"Features.ProgressLSN": KeyProgressLSN,
}

// While a snapshot is rendered, a tern action (a placeholder, or the
// if/else/end of a lifted condition) is carried through the output as
// actionOpen + action + actionClose; template text never contains these
// bytes (SnapshotOf checks).
const (
	actionOpen  = "\x00"
	actionClose = "\x01"
)

func ternAction(action string) string { return actionOpen + action + actionClose }

func placeholderData(version string) templateData {
	return templateData{
		S:               ternAction("." + KeySchema),
		Schema:          ternAction("." + KeySchema),
		Dblink:          ternAction("." + KeyDblinkSchema),
		Version:         version,
		SyncTimeout:     ternAction("." + KeySyncTimeoutSeconds),
		LockKey1:        LockKey1,
		LockKey2:        LockKey2,
		CompareMaxBytes: CompareMaxBytes,
		Features: templateFeatures{
			ServerMajor:     ternAction("." + KeyServerMajor),
			ProgressLSN:     ternAction("." + KeyProgressLSN),
			MinSpockVersion: MinSpockVersion,
		},
	}
}

// RootTemplate is the template that renders the whole procedure set.
const RootTemplate = "zodan.sql.tmpl"

var (
	snapshotOnce sync.Once
	snapshot     string
	snapshotErr  error
)

// Snapshot is the tern code package of the embedded templates as zodan
// zodan.Version: what sql/snapshots/<zodan.Version>/install.sql must hold.
func Snapshot() (string, error) {
	snapshotOnce.Do(func() {
		snapshot, snapshotErr = SnapshotOf(zodan.Templates(), zodan.Version)
	})
	return snapshot, snapshotErr
}

// SnapshotOf renders the templates in dir (RootTemplate and the files it
// includes, *.sql.tmpl) into the tern code package of release version.
//
// The per-node fields of the template data become tern placeholders. A
// template may print them; an {{if}} whose condition compares them with
// constants is carried into the snapshot as the same tern {{if}} (so it
// is decided per node, exactly as before); any other use (a function
// applied to them, range, with, printf, passing them to a template) is
// refused, because a snapshot could not reproduce it.
func SnapshotOf(dir fs.FS, version string) (string, error) {
	names, err := fs.Glob(dir, "*.sql.tmpl")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	root := template.New("zodan").Option("missingkey=error")
	for _, name := range names {
		body, err := fs.ReadFile(dir, name)
		if err != nil {
			return "", err
		}
		if bytes.ContainsAny(body, actionOpen+actionClose) {
			return "", fmt.Errorf("%s contains a NUL or \\x01 byte", name)
		}
		if _, err := root.New(name).Parse(string(body)); err != nil {
			return "", fmt.Errorf("parsing %s: %w", name, err)
		}
	}
	if root.Lookup(RootTemplate) == nil {
		return "", fmt.Errorf("no %s among the templates", RootTemplate)
	}
	var problems []string
	for _, t := range root.Templates() {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		l := &lifter{template: t.Name()}
		l.list(t.Tree.Root)
		problems = append(problems, l.problems...)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return "", fmt.Errorf("the templates use per-node install parameters in ways a snapshot cannot reproduce (they may only print them, or compare them with constants or each other in an {{if}}):\n  %s",
			strings.Join(problems, "\n  "))
	}
	var buf bytes.Buffer
	if err := root.ExecuteTemplate(&buf, RootTemplate, placeholderData(version)); err != nil {
		return "", fmt.Errorf("rendering the procedures: %w", err)
	}
	rendered := buf.String()
	if strings.Contains(rendered, "<no value>") {
		return "", fmt.Errorf("rendering the procedures: a template referenced a value that was not provided")
	}
	return snapshotHeader(version, rendered) + toTern(rendered), nil
}

// snapshotHeader is a tern comment, so it is not part of the SQL; its
// closing "-}}" would eat whitespace the SQL starts with, so such
// whitespace is written as a tern string.
func snapshotHeader(version, rendered string) string {
	h := `{{/*
  zodan ` + version + `: the procedures exactly as released, a tern code package
  evaluated per node with ` + KeySchema + `, ` + KeyDblinkSchema + `, ` + KeySyncTimeoutSeconds + `,
  ` + KeyServerMajor + ` and ` + KeyProgressLSN + `. Generated from templates/ by "make snapshot";
  never edit it: internal/install/releases.go holds its SHA-256.
*/ -}}
`
	if lead := len(rendered) - len(strings.TrimLeft(rendered, " \t\r\n")); lead > 0 {
		h += "{{" + strconv.Quote(rendered[:lead]) + "}}"
	}
	return h
}

// toTern turns rendered text with carried actions into tern template
// text: literal text with every "{{" (and a "{" right before an action)
// escaped, and the actions as {{...}}.
func toTern(rendered string) string {
	var b strings.Builder
	rest := rendered
	for {
		i := strings.Index(rest, actionOpen)
		if i < 0 {
			b.WriteString(escapeLiteral(rest, false))
			return b.String()
		}
		j := strings.Index(rest[i:], actionClose)
		b.WriteString(escapeLiteral(rest[:i], true))
		b.WriteString("{{" + rest[i+1:i+j] + "}}")
		rest = rest[i+j+1:]
	}
}

// escapeLiteral makes text literal in a Go template: runs of two or more
// "{", and a lone "{" just before an action, become string actions.
func escapeLiteral(text string, beforeAction bool) string {
	if !strings.Contains(text, "{") {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		if text[i] != '{' {
			b.WriteByte(text[i])
			i++
			continue
		}
		j := i
		for j < len(text) && text[j] == '{' {
			j++
		}
		if run := text[i:j]; len(run) >= 2 || (j == len(text) && beforeAction) {
			b.WriteString(`{{"` + run + `"}}`)
		} else {
			b.WriteString(run)
		}
		i = j
	}
	return b.String()
}

// lifter checks one template's parse tree for uses of per-node fields and
// turns the {{if}}s that test them into carried tern actions.
type lifter struct {
	template string
	problems []string
}

func (l *lifter) problem(n parse.Node, format string, a ...any) {
	l.problems = append(l.problems, fmt.Sprintf("%s: {{%s}}: %s", l.template, n, fmt.Sprintf(format, a...)))
}

func textNode(s string) *parse.TextNode {
	return &parse.TextNode{NodeType: parse.NodeText, Text: []byte(s)}
}

func (l *lifter) list(list *parse.ListNode) {
	if list == nil {
		return
	}
	for i, n := range list.Nodes {
		switch n := n.(type) {
		case *parse.ActionNode:
			// Variables never hold per-node values: a declaration from
			// them is refused here, so $x is never one.
			if usesNodeParams(n.Pipe) && nodeParamPrinted(n.Pipe) == "" {
				l.problem(n.Pipe, "computes with a per-node parameter or stores it in a variable; templates may only print it")
			}
		case *parse.IfNode:
			l.list(n.List)
			l.list(n.ElseList)
			if !usesNodeParams(n.Pipe) {
				continue
			}
			cond, err := ternCondition(n.Pipe)
			if err != nil {
				l.problem(n.Pipe, "%v", err)
				continue
			}
			nodes := []parse.Node{textNode(ternAction("if " + cond)), n.List}
			if n.ElseList != nil {
				nodes = append(nodes, textNode(ternAction("else")), n.ElseList)
			}
			nodes = append(nodes, textNode(ternAction("end")))
			list.Nodes[i] = &parse.ListNode{NodeType: parse.NodeList, Pos: n.Pos, Nodes: nodes}
		case *parse.RangeNode:
			if usesNodeParams(n.Pipe) {
				l.problem(n.Pipe, "ranges over a per-node parameter")
			}
			l.list(n.List)
			l.list(n.ElseList)
		case *parse.WithNode:
			if usesNodeParams(n.Pipe) {
				l.problem(n.Pipe, "with on a per-node parameter")
			}
			l.list(n.List)
			l.list(n.ElseList)
		case *parse.TemplateNode:
			if n.Pipe != nil && usesNodeParams(n.Pipe) && !isDot(n.Pipe) {
				l.problem(n, "passes per-node parameters to a template other than as \".\"")
			}
		case *parse.ListNode:
			l.list(n)
		}
	}
}

// fieldPath is the data path a node names (".Features.ServerMajor" and
// "$.Features.ServerMajor" give "Features.ServerMajor"; "." and "$" give
// ""), and whether it names the data at all.
func fieldPath(n parse.Node) (string, bool) {
	switch n := n.(type) {
	case *parse.FieldNode:
		return strings.Join(n.Ident, "."), true
	case *parse.VariableNode:
		if n.Ident[0] == "$" {
			return strings.Join(n.Ident[1:], "."), true
		}
	case *parse.DotNode:
		return "", true
	}
	return "", false
}

// touchesNodeParams: path names a per-node field, or data that contains
// one.
func touchesNodeParams(path string) bool {
	for p := range nodeParams {
		if path == p || path == "" || strings.HasPrefix(p, path+".") || strings.HasPrefix(path, p+".") {
			return true
		}
	}
	return false
}

func usesNodeParams(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			if usesNodeParams(c) {
				return true
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if usesNodeParams(a) {
				return true
			}
		}
	case *parse.ChainNode:
		return true // (pipeline).Field: cannot tell; refuse
	}
	if path, ok := fieldPath(n); ok {
		return touchesNodeParams(path)
	}
	return false
}

func isDot(p *parse.PipeNode) bool {
	if len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return false
	}
	_, ok := p.Cmds[0].Args[0].(*parse.DotNode)
	return ok
}

// nodeParamPrinted is the tern key an action that just prints a per-node
// field prints, or "".
func nodeParamPrinted(p *parse.PipeNode) string {
	if len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return ""
	}
	if path, ok := fieldPath(p.Cmds[0].Args[0]); ok {
		return nodeParams[path]
	}
	return ""
}

// comparisons are the functions a lifted condition may use.
var comparisons = map[string]bool{"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true, "not": true, "and": true, "or": true}

// ternCondition rewrites an {{if}} condition on per-node fields for tern:
// fields become their tern keys; only comparisons and constants may
// appear besides them.
func ternCondition(p *parse.PipeNode) (string, error) {
	if len(p.Decl) > 0 || len(p.Cmds) != 1 {
		return "", fmt.Errorf("a condition on a per-node parameter must be one comparison, without variables or pipes")
	}
	var words []string
	for i, a := range p.Cmds[0].Args {
		switch a := a.(type) {
		case *parse.IdentifierNode:
			if i != 0 || !comparisons[a.Ident] {
				return "", fmt.Errorf("a condition on a per-node parameter may only use eq, ne, lt, le, gt, ge, not, and, or, not %s", a.Ident)
			}
			words = append(words, a.Ident)
		case *parse.StringNode:
			words = append(words, a.Quoted)
		case *parse.NumberNode:
			words = append(words, a.Text)
		case *parse.BoolNode:
			words = append(words, a.String())
		case *parse.PipeNode:
			inner, err := ternCondition(a)
			if err != nil {
				return "", err
			}
			words = append(words, "("+inner+")")
		default:
			path, ok := fieldPath(a)
			key := nodeParams[path]
			if !ok || key == "" {
				return "", fmt.Errorf("a condition on a per-node parameter may compare it only with constants or other per-node parameters, not with %s", a)
			}
			words = append(words, "."+key)
		}
	}
	return strings.Join(words, " "), nil
}

var codePackages sync.Map // snapshot text -> *migrate.CodePackage

// Eval evaluates a snapshot for the node opts describe, as tern evaluates
// a code package.
func Eval(snapshot string, opts Options) (string, error) {
	data, err := opts.Data()
	if err != nil {
		return "", err
	}
	var cp *migrate.CodePackage
	if v, ok := codePackages.Load(snapshot); ok {
		cp = v.(*migrate.CodePackage)
	} else {
		cp, err = migrate.LoadCodePackage(fstest.MapFS{"install.sql": {Data: []byte(snapshot)}})
		if err != nil {
			return "", fmt.Errorf("loading the snapshot: %w", err)
		}
		codePackages.Store(snapshot, cp)
	}
	sql, err := cp.Eval(data)
	if err != nil {
		return "", fmt.Errorf("evaluating the snapshot: %w", err)
	}
	if strings.Contains(sql, "<no value>") {
		return "", fmt.Errorf("evaluating the snapshot: it uses a value that is not an install parameter")
	}
	return sql, nil
}

// Procedures renders the complete procedure set of the embedded templates
// for opts: every CREATE FUNCTION and CREATE PROCEDURE, in dependency
// order. It is Eval(Snapshot(), opts).
func Procedures(opts Options) (string, error) {
	s, err := Snapshot()
	if err != nil {
		return "", err
	}
	return Eval(s, opts)
}

// Checksum is the hex SHA-256 of rendered SQL, as recorded by the
// installer.
func Checksum(sql string) string {
	sum := sha256.Sum256([]byte(sql))
	return hex.EncodeToString(sum[:])
}
