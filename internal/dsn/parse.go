package dsn

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Param is one setting of a connection string, in the order written.
// Start and End delimit its value as written in the string (quotes and
// escapes or percent-encoding included), so that a masker can replace
// exactly that text and nothing else.
type Param struct {
	Keyword    string
	Value      string
	Start, End int
}

// secretKeywords are the libpq settings whose values are secrets.
var secretKeywords = map[string]bool{
	"password":            true,
	"sslpassword":         true,
	"oauth_client_secret": true,
}

// IsSecret reports whether a connection setting holds a secret.
func IsSecret(keyword string) bool { return secretKeywords[asciiLower(keyword)] }

// asciiLower folds A-Z only, as the SQL side (translate) does: Unicode
// folding would turn "\u212a" (Kelvin) into a "k" there is none of here.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Parse reads a connection string the way libpq does: keyword/value pairs
// (values quoted with ' or not, backslash escapes in both) or a
// postgresql:// / postgres:// URI (user:password@, host lists with IPv6
// brackets, percent-encoding, query parameters). It checks syntax only;
// keywords are not validated, and a later keyword overrides an earlier
// one (see Lookup). Errors never quote the string: it may hold a password.
func Parse(s string) ([]Param, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, errors.New("forbidden NUL byte in connection string")
	}
	if uriPrefixLen(s) > 0 {
		return parseURI(s)
	}
	return parseKeywordValue(s)
}

// Lookup returns the value libpq would use for keyword: the last one given.
func Lookup(params []Param, keyword string) (string, bool) {
	for i := len(params) - 1; i >= 0; i-- {
		if params[i].Keyword == keyword {
			return params[i].Value, true
		}
	}
	return "", false
}

// uriPrefixLen is the length of the URI scheme prefix s starts with, or 0.
// libpq compares it case-sensitively, and so does this.
func uriPrefixLen(s string) int {
	for _, p := range []string{"postgresql://", "postgres://"} {
		if strings.HasPrefix(s, p) {
			return len(p)
		}
	}
	return 0
}

// isSpace is C's isspace in the "C" locale, which libpq uses.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func parseKeywordValue(s string) ([]Param, error) {
	var params []Param
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return params, nil
		}
		kstart := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[kstart:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("missing \"=\" after %q in connection info string", printable(key))
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		start := i
		value, next, err := scanKeywordValue(s, i)
		if err != nil {
			return nil, fmt.Errorf("%w (value of %q)", err, printable(key))
		}
		params = append(params, Param{Keyword: key, Value: value, Start: start, End: next})
		i = next
	}
}

// scanKeywordValue reads one value of a keyword/value string starting at
// i, by libpq's rules: a quoted value runs to the next unescaped quote, an
// unquoted one to the next white space; a backslash makes the next
// character literal in both. It returns the value and where it ended.
func scanKeywordValue(s string, i int) (string, int, error) {
	var b strings.Builder
	if i < len(s) && s[i] == '\'' {
		i++
		for {
			if i >= len(s) {
				return "", i, errors.New("unterminated quoted string in connection info string")
			}
			switch s[i] {
			case '\\':
				i++
				if i < len(s) {
					b.WriteByte(s[i])
					i++
				}
			case '\'':
				return b.String(), i + 1, nil
			default:
				b.WriteByte(s[i])
				i++
			}
		}
	}
	for i < len(s) && !isSpace(s[i]) {
		if s[i] == '\\' {
			i++
			if i < len(s) {
				b.WriteByte(s[i])
				i++
			}
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String(), i, nil
}

func parseURI(s string) ([]Param, error) {
	var params []Param
	add := func(key string, raw string, start int) error {
		v, err := uriDecode(raw)
		if err != nil {
			return fmt.Errorf("%w in the %s of the URI", err, key)
		}
		params = append(params, Param{Keyword: key, Value: v, Start: start, End: start + len(raw)})
		return nil
	}
	p := uriPrefixLen(s)

	// [user[:password]@]: the userinfo ends at the first '@' that comes
	// before any '/'.
	if at := strings.IndexAny(s[p:], "@/"); at >= 0 && s[p+at] == '@' {
		userinfo := s[p : p+at]
		user, password, hasPassword := strings.Cut(userinfo, ":")
		if user != "" {
			if err := add("user", user, p); err != nil {
				return nil, err
			}
		}
		if hasPassword && password != "" {
			if err := add("password", password, p+len(user)+1); err != nil {
				return nil, err
			}
		}
		p += at + 1
	}

	// host[:port][,host[:port]...], IPv6 addresses in brackets.
	var hosts, ports strings.Builder
	hostStart, portStart := p, -1
	for {
		if p < len(s) && s[p] == '[' {
			end := strings.IndexByte(s[p:], ']')
			if end < 0 {
				return nil, errors.New(`end of string reached when looking for matching "]" in IPv6 host address in URI`)
			}
			if end == 1 {
				return nil, errors.New("IPv6 host address may not be empty in URI")
			}
			hosts.WriteString(s[p+1 : p+end])
			p += end + 1
			if p < len(s) && !strings.ContainsRune(":/?,", rune(s[p])) {
				return nil, fmt.Errorf("unexpected character %q at position %d in URI (expected \":\" or \"/\")", s[p], p+1)
			}
		} else {
			end := strings.IndexAny(s[p:], ":/?,")
			if end < 0 {
				end = len(s) - p
			}
			hosts.WriteString(s[p : p+end])
			p += end
		}
		if p < len(s) && s[p] == ':' {
			p++
			if portStart < 0 {
				portStart = p
			}
			end := strings.IndexAny(s[p:], "/?,")
			if end < 0 {
				end = len(s) - p
			}
			ports.WriteString(s[p : p+end])
			p += end
		}
		if p >= len(s) || s[p] != ',' {
			break
		}
		p++
		hosts.WriteByte(',')
		ports.WriteByte(',')
	}
	if hosts.Len() > 0 {
		if err := addDecoded(&params, "host", hosts.String(), hostStart, p); err != nil {
			return nil, err
		}
	}
	if ports.Len() > 0 {
		if err := addDecoded(&params, "port", ports.String(), portStart, p); err != nil {
			return nil, err
		}
	}

	// [/dbname]
	if p < len(s) && s[p] == '/' {
		p++
		end := strings.IndexByte(s[p:], '?')
		if end < 0 {
			end = len(s) - p
		}
		if end > 0 {
			if err := add("dbname", s[p:p+end], p); err != nil {
				return nil, err
			}
		}
		p += end
	}

	// [?keyword=value[&...]]
	if p < len(s) && s[p] == '?' {
		p++
		for p < len(s) {
			end := strings.IndexByte(s[p:], '&')
			if end < 0 {
				end = len(s) - p
			}
			pair := s[p : p+end]
			rawKey, rawValue, found := strings.Cut(pair, "=")
			if !found {
				return nil, errors.New(`missing key/value separator "=" in URI query parameter`)
			}
			if strings.Contains(rawValue, "=") {
				return nil, errors.New(`extra key/value separator "=" in URI query parameter`)
			}
			key, err := uriDecode(rawKey)
			if err != nil {
				return nil, fmt.Errorf("%w in a URI query parameter name", err)
			}
			if key == "ssl" && rawValue == "true" {
				key, rawValue = "sslmode", "require"
			}
			if err := add(key, rawValue, p+len(rawKey)+1); err != nil {
				return nil, err
			}
			p += end
			if p < len(s) {
				p++ // '&'
			}
		}
	}
	return params, nil
}

// addDecoded appends a host or port list; its span covers the whole
// authority it was gathered from.
func addDecoded(params *[]Param, key, raw string, start, end int) error {
	v, err := uriDecode(raw)
	if err != nil {
		return fmt.Errorf("%w in the %s of the URI", err, key)
	}
	*params = append(*params, Param{Keyword: key, Value: v, Start: start, End: end})
	return nil
}

// uriDecode undoes percent-encoding as libpq does; a result that is not
// UTF-8 is returned still encoded. It trims spaces around
// the value and accepts spaces inside it: PostgreSQL 18's libpq refuses
// those, older ones keep them, and a masker must rather accept too much.
func uriDecode(s string) (string, error) {
	s = strings.Trim(s, " ")
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		hi, ok1 := unhex(s, i+1)
		lo, ok2 := unhex(s, i+2)
		if !ok1 || !ok2 {
			return "", errors.New("invalid percent-encoded token")
		}
		c := hi<<4 | lo
		if c == 0 {
			return "", errors.New("forbidden value %00 in percent-encoded value")
		}
		b.WriteByte(c)
		i += 2
	}
	if !utf8.ValidString(b.String()) {
		// As the SQL side must (its text is UTF-8): keep it encoded.
		return s, nil
	}
	return b.String(), nil
}

func unhex(s string, i int) (byte, bool) {
	if i >= len(s) {
		return 0, false
	}
	switch c := s[i]; {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// printable shortens and cleans a keyword for an error message.
func printable(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
