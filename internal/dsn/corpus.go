package dsn

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LoadCorpus reads a test corpus file: one Go-quoted string per line,
// blank lines and # comments skipped. The Go tests and the SQL tests of
// the same masking rules read the same file (testdata/corpus.txt).
func LoadCorpus(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := strconv.Unquote(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}
