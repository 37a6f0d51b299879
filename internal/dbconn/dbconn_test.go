package dbconn

import "testing"

func TestDropRepeatedLines(t *testing.T) {
	in := "failed to connect:\n\thost a: refused\n\thost a: refused\n\thost b: refused"
	want := "failed to connect:\n\thost a: refused\n\thost b: refused"
	if got := dropRepeatedLines(in); got != want {
		t.Errorf("dropRepeatedLines = %q, want %q", got, want)
	}
}
