package dsn

import (
	"encoding/json"
	"io"
	"net/url"
	"sort"
	"strings"
)

// Masked is what a secret is replaced with.
const Masked = "********"

// Mask hides secrets in text: a whole connection string, or any message
// that may quote one (a server error, a libpq message, a log line).
//
// A text that parses as a connection string is masked exactly: the
// values of password, sslpassword and oauth_client_secret, as Parse
// delimits them, become ********, and nothing else changes. Any other
// text is scanned for fragments: every "password = value" (any case,
// value read by libpq's keyword/value rules) and every
// "postgresql://user:secret@" has its secret replaced. The SQL function
// zodan_redact implements the same algorithm; a test holds them equal.
func Mask(text string) string {
	if params, err := Parse(text); err == nil && looksLikeConnString(text) {
		return maskSpans(text, params)
	}
	return maskFragments(text)
}

// looksLikeConnString tells a connection string from prose that happens
// to parse as one (the empty string, for instance).
func looksLikeConnString(s string) bool {
	return uriPrefixLen(s) > 0 || strings.Contains(s, "=")
}

func maskSpans(text string, params []Param) string {
	uri := uriPrefixLen(text) > 0
	type edit struct {
		start, end int
		with       string
	}
	var edits []edit
	for _, p := range params {
		switch {
		case p.Value == "" || p.End <= p.Start:
		case IsSecret(p.Keyword) && !uri && text[p.Start] == '\'':
			// Quoted stays quoted: "password='x'=" is two settings.
			edits = append(edits, edit{p.Start, p.End, "'" + Masked + "'"})
		case IsSecret(p.Keyword):
			edits = append(edits, edit{p.Start, p.End, Masked})
		case p.Keyword != "host" && p.Keyword != "port" && mayQuoteSecret(p.Value):
			// Another setting can quote a whole connection string
			// (dbname='postgresql://u:pw@h/db'): its secrets go too,
			// and the value is written back so the string still parses.
			inner := Mask(p.Value)
			if inner == p.Value {
				continue
			}
			if uri {
				inner = percentEncodeAll(inner)
			} else {
				inner = "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(inner) + "'"
			}
			edits = append(edits, edit{p.Start, p.End, inner})
		}
	}
	sort.Slice(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var b strings.Builder
	at := 0
	for _, e := range edits {
		if e.start < at {
			continue
		}
		b.WriteString(text[at:e.start])
		b.WriteString(e.with)
		at = e.end
	}
	b.WriteString(text[at:])
	return b.String()
}

// mayQuoteSecret: a value that mentions a secret keyword or a URI.
func mayQuoteSecret(v string) bool {
	l := asciiLower(v)
	return strings.Contains(l, "password") || strings.Contains(l, "secret") || strings.Contains(l, "://")
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// secretKeywordAt returns the length of the secret keyword that starts at
// text[i] as a whole word, matched without regard to case, or 0.
func secretKeywordAt(text string, i int) int {
	if i > 0 && isWordByte(text[i-1]) {
		return 0
	}
	for _, kw := range []string{"oauth_client_secret", "sslpassword", "password"} {
		if len(text)-i >= len(kw) && asciiLower(text[i:i+len(kw)]) == kw &&
			(i+len(kw) == len(text) || !isWordByte(text[i+len(kw)])) {
			return len(kw)
		}
	}
	return 0
}

func maskFragments(text string) string {
	var b strings.Builder
	i := 0
	for i < len(text) {
		// scheme://user:secret@ -- the user information ends at the first
		// '@' before any '/'; a line break ends the search in prose.
		if n := uriPrefixLen(text[i:]); n > 0 && (i == 0 || !isWordByte(text[i-1])) {
			j := i + n
			k := j
			for k < len(text) && text[k] != '@' && text[k] != '/' && text[k] != '\n' {
				k++
			}
			if k < len(text) && text[k] == '@' {
				if colon := strings.IndexByte(text[j:k], ':'); colon >= 0 && j+colon+1 < k {
					b.WriteString(text[i : j+colon+1])
					b.WriteString(Masked)
					b.WriteByte('@')
					i = k + 1
					continue
				}
			}
			b.WriteString(text[i:j])
			i = j
			continue
		}
		// password = value
		if n := secretKeywordAt(text, i); n > 0 {
			j := i + n
			for j < len(text) && isSpace(text[j]) {
				j++
			}
			if j < len(text) && text[j] == '=' {
				j++
				for j < len(text) && isSpace(text[j]) {
					j++
				}
				var end int
				if i > 0 && (text[i-1] == '?' || text[i-1] == '&') {
					// A URI query parameter ends at '&'.
					end = j
					for end < len(text) && text[end] != '&' && !isSpace(text[end]) {
						end++
					}
				} else {
					_, end, _ = scanKeywordValue(text, j)
				}
				if alreadyMasked(text[j:end]) {
					b.WriteString(text[i:end])
					i = end
					continue
				}
				if end > j {
					b.WriteString(text[i:j])
					b.WriteString(Masked)
					i = end
					continue
				}
			}
			b.WriteString(text[i:j])
			i = j
			continue
		}
		b.WriteByte(text[i])
		i++
	}
	return b.String()
}

// alreadyMasked: a value that is the mask itself, perhaps followed by the
// quote that closes the prose around it ('password=********' in a quoted
// command line). Masking it again would swallow that quote.
func alreadyMasked(v string) bool {
	return v == Masked || v == Masked+"'" || v == Masked+`"` || v == "'"+Masked+"'"
}

// displayKeywords are the settings Display shows, in its order.
var displayKeywords = []string{"host", "hostaddr", "port", "dbname", "user", "service"}

// Display is a connection string rebuilt from its harmless settings
// (host, hostaddr, port, dbname, user, service; the last of each wins),
// for messages. It matches the SQL function zodan_dsn_display.
func Display(s string) string {
	params, err := Parse(s)
	if err != nil {
		return "(unparsable DSN)"
	}
	var parts []string
	for _, kw := range displayKeywords {
		if v, ok := Lookup(params, kw); ok && v != "" {
			parts = append(parts, kw+"="+Mask(v))
		}
	}
	if len(parts) == 0 {
		return "(DSN with defaults only)"
	}
	return strings.Join(parts, " ")
}

// Secrets are the secret values a connection string carries (password,
// sslpassword, oauth_client_secret), or none when it does not parse.
func Secrets(s string) []string {
	params, err := Parse(s)
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range params {
		if IsSecret(p.Keyword) && p.Value != "" {
			out = append(out, p.Value)
		}
	}
	return out
}

// MinRedactedLength is the shortest secret a Redactor replaces wherever it
// appears: a shorter one would turn ordinary words and numbers into
// asterisks. Mask still hides secrets of any length in their place.
const MinRedactedLength = 4

// Redactor hides known secrets, taken from the connection strings a
// program was given, in every form they can be written (as given,
// percent-encoded, backslash-escaped), and then applies Mask. It is the
// last filter before anything is printed: it also catches a secret that a
// server quoted in words Mask cannot recognise.
type Redactor struct {
	forms []string
}

// NewRedactor collects the secrets of the given connection strings.
func NewRedactor(connStrings ...string) *Redactor {
	seen := map[string]bool{}
	r := &Redactor{}
	for _, cs := range connStrings {
		for _, s := range Secrets(cs) {
			if len(s) < MinRedactedLength || strings.Trim(s, "*") == "" {
				continue
			}
			escaped := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
			jsonForm, _ := json.Marshal(s)
			for _, f := range []string{s, url.QueryEscape(s), url.PathEscape(s), percentEncodeAll(s), escaped,
				strings.Trim(string(jsonForm), `"`)} {
				if !seen[f] {
					seen[f] = true
					r.forms = append(r.forms, f)
				}
			}
		}
	}
	// Longest first, so that no shorter form leaves part of a longer one.
	sort.Slice(r.forms, func(i, j int) bool { return len(r.forms[i]) > len(r.forms[j]) })
	return r
}

// Redact returns text with every known secret and every recognisable
// password replaced by ********.
func (r *Redactor) Redact(text string) string {
	return Mask(r.HideKnown(text))
}

// HideKnown replaces the known secrets only, leaving text otherwise as it
// is: output that was already masked where it was made (a command line
// in quotes, JSON) must not be masked again by guessing.
func (r *Redactor) HideKnown(text string) string {
	if r != nil {
		for _, f := range r.forms {
			text = strings.ReplaceAll(text, f, Masked)
		}
	}
	return text
}

// percentEncodeAll encodes every byte but unreserved ones (RFC 3986), the
// form a careful DBA writes a password in a URI with.
func percentEncodeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isWordByte(c) && c != '_' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// RedactingWriter passes everything written to w through r.HideKnown.
// Callers write whole lines or messages, so a secret is never split
// between two writes.
func RedactingWriter(w io.Writer, r *Redactor) io.Writer {
	return &redactingWriter{w: w, r: r}
}

type redactingWriter struct {
	w io.Writer
	r *Redactor
}

func (rw *redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.HideKnown(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
