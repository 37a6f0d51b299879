package install

import "testing"

func TestVersionLess(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"1.0.0", "1.0.1", true},
		{"1.0.9", "1.0.10", true},
		{"1.0.10", "1.0.9", false},
		{"1.0.0", "1.0.0", false},
		{"1.0", "1.0.1", true},
		{"1.0.0-rc1", "1.0.0", false},
		{"", "1.0.0", true},
		{"2.0.0", "1.9.9", false},
	}
	for _, tc := range cases {
		if got := VersionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("VersionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
