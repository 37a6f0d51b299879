package dsn

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestMaskHidesEveryPasswordForm(t *testing.T) {
	cases := []string{
		"host=h password=s3cret dbname=app",
		"host=h password = s3cret dbname=app",
		"host=h password='s3cret with space' dbname=app",
		`host=h password='s3\'cret' dbname=app`,
		"host=h PASSWORD=s3cret",
		"host=h sslpassword=s3cret",
		"postgresql://alice:s3cret@h:5432/app",
		"postgres://alice:s3cret@h1,h2/app?sslmode=require",
		"failed to connect to `host=h password=s3cret`: boom",
		"postgresql://h/app?password=s3cret&sslmode=disable",
	}
	for _, c := range cases {
		got := Mask(c)
		if strings.Contains(got, "s3") || strings.Contains(got, "cret") {
			t.Errorf("Mask(%q) = %q still shows the password", c, got)
		}
		if !strings.Contains(got, "********") {
			t.Errorf("Mask(%q) = %q shows no mask", c, got)
		}
	}
}

func TestMaskKeepsTheRest(t *testing.T) {
	got := Mask("host=db1 port=5433 password=x dbname=app user=bob")
	want := "host=db1 port=5433 password=******** dbname=app user=bob"
	if got != want {
		t.Errorf("Mask = %q, want %q", got, want)
	}
	if got := Mask("postgresql://bob:x@db1:5433/app"); got != "postgresql://bob:********@db1:5433/app" {
		t.Errorf("Mask(URI) = %q", got)
	}
	if got := Mask("no secrets here"); got != "no secrets here" {
		t.Errorf("Mask changed %q", got)
	}
}

func TestLabel(t *testing.T) {
	for in, want := range map[string]string{
		"host=db1 port=5433 dbname=app user=bob password=x": "db1:5433/app",
		"postgresql://bob:x@db2:6000/sales":                 "db2:6000/sales",
	} {
		if got := Label(in); got != want {
			t.Errorf("Label(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Label("host=db1 port=notanumber password=s3cret"); strings.Contains(got, "s3cret") {
		t.Errorf("Label of a bad DSN leaks the password: %q", got)
	}
}

func TestParseErrorNeverQuotesTheDSN(t *testing.T) {
	bad := `host=h port=notaport password='it\'s a s3cret'`
	for _, got := range []string{Label(bad), parseErrorOf(bad)} {
		if strings.Contains(got, "s3cret") || strings.Contains(got, "it") && strings.Contains(got, "a s3") {
			t.Errorf("parse error shows part of the password: %q", got)
		}
		if !strings.Contains(got, "port") {
			t.Errorf("parse error does not say what is wrong: %q", got)
		}
	}
}

func parseErrorOf(s string) string {
	_, err := pgconn.ParseConfig(s)
	return ParseError(err)
}
