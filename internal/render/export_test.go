package render

import (
	"bytes"
	"io/fs"
	"strconv"
	"text/template"
	"time"
)

// RenderDirect renders the templates in dir for opts the way zodan 1.0.0
// did, with the parameters' values in the template data rather than
// placeholders: the reference that Eval(SnapshotOf(dir), opts) must equal.
func RenderDirect(dir fs.FS, version string, opts Options) (string, error) {
	if _, err := opts.Data(); err != nil {
		return "", err
	}
	opts = opts.withDefaults()
	t, err := template.New("zodan").Option("missingkey=error").ParseFS(dir, "*.sql.tmpl")
	if err != nil {
		return "", err
	}
	data := templateData{
		S: opts.Schema, Schema: opts.Schema, Dblink: opts.Dblink,
		Version:     version,
		SyncTimeout: strconv.Itoa(int(opts.SyncTimeout / time.Second)),
		LockKey1:    LockKey1, LockKey2: LockKey2,
		CompareMaxBytes: CompareMaxBytes,
		Features: templateFeatures{
			ServerMajor:     strconv.Itoa(opts.Features.ServerVersionNum / 10000),
			ProgressLSN:     opts.Features.ProgressLSN,
			MinSpockVersion: MinSpockVersion,
		},
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, RootTemplate, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}
