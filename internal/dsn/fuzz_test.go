package dsn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

func seedCorpus(f *testing.F) {
	f.Helper()
	corpus, err := LoadCorpus(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range corpus {
		f.Add(s)
	}
}

// clearLibpqEnvironment keeps PG* variables and service files out of
// pgx's answers: the oracle must judge the string alone.
func clearLibpqEnvironment(f *testing.F) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PG") {
			f.Setenv(k, "")
		}
	}
	f.Setenv("PGSERVICEFILE", filepath.Join(f.TempDir(), "none"))
	f.Setenv("PGPASSFILE", filepath.Join(f.TempDir(), "none"))
}

// FuzzParseAgreesWithPgx holds Parse to pgx's own parser, which follows
// libpq: whatever pgx accepts, Parse accepts, with the same password,
// user and database.
func FuzzParseAgreesWithPgx(f *testing.F) {
	seedCorpus(f)
	clearLibpqEnvironment(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !looksLikeConnString(s) {
			return // pgx fills an empty string with defaults
		}
		cfg, err := pgconn.ParseConfig(s)
		if err != nil {
			return // Parse may accept more than libpq: it only masks
		}
		params, err := Parse(s)
		if err != nil {
			t.Fatalf("pgx parses %q, Parse does not: %v", s, err)
		}
		for kw, got := range map[string]string{"password": cfg.Password, "user": cfg.User, "dbname": cfg.Database} {
			if v, ok := Lookup(params, kw); ok && v != "" && v != got && utf8.ValidString(got) {
				t.Fatalf("%q: %s = %q, pgx says %q", s, kw, v, got)
			}
		}
		if _, ok := Lookup(params, "password"); !ok && cfg.Password != "" {
			t.Fatalf("%q: pgx finds password %q, Parse none", s, cfg.Password)
		}
	})
}

// FuzzMaskHidesPasswords: whatever pgx would send as a password is gone
// from Mask's output, for the connection string alone and quoted in a
// message, and Mask leaves a parseable string parseable with every other
// setting unchanged.
func FuzzMaskHidesPasswords(f *testing.F) {
	seedCorpus(f)
	clearLibpqEnvironment(f)
	f.Fuzz(func(t *testing.T, s string) {
		params, err := Parse(s)
		if err != nil || !looksLikeConnString(s) {
			_ = Mask(s) // must not panic
			return
		}
		masked := Mask(s)
		again, err := Parse(masked)
		if err != nil {
			t.Fatalf("Mask(%q) = %q no longer parses: %v", s, masked, err)
		}
		if len(again) != len(params) {
			t.Fatalf("Mask(%q) = %q has %d settings, want %d", s, masked, len(again), len(params))
		}
		for i, p := range params {
			if IsSecret(p.Keyword) && p.Value != "" {
				if again[i].Value != Masked {
					t.Fatalf("Mask(%q) = %q: %s is %q", s, masked, p.Keyword, again[i].Value)
				}
				continue
			}
			if !mayQuoteSecret(p.Value) && again[i] != (Param{p.Keyword, p.Value, again[i].Start, again[i].End}) {
				t.Fatalf("Mask(%q) = %q changed %s from %q to %q", s, masked, p.Keyword, p.Value, again[i].Value)
			}
		}
		cfg, err := pgconn.ParseConfig(s)
		if err != nil || len(cfg.Password) < MinRedactedLength || strings.Contains(Mask(s), cfg.Password) {
			return
		}
		// The same string quoted in prose, as servers and drivers do.
		for _, msg := range []string{
			"DETAIL: dsn was: " + s,
			"failed to connect to `" + s + "`: server error",
		} {
			if got := NewRedactor(s).Redact(msg); strings.Contains(got, cfg.Password) {
				t.Fatalf("Redact(%q) = %q shows the password", msg, got)
			}
		}
	})
}

func TestCorpusIsValidUTF8(t *testing.T) {
	corpus, err := LoadCorpus(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range corpus {
		if !utf8.ValidString(s) {
			t.Errorf("corpus entry %q is not UTF-8: the SQL test cannot use it", s)
		}
	}
}
