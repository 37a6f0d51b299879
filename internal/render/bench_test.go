package render

import "testing"

// BenchmarkProcedures renders the whole procedure set. Goal: well under
// 10 ms, so that zodan and zodan-install can render per node (each node's
// own features) without the user noticing.
func BenchmarkProcedures(b *testing.B) {
	for b.Loop() {
		if _, err := Procedures(Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
