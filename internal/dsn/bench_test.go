package dsn

import "testing"

// BenchmarkMask masks the passwords in a typical error line. Goal: a few
// microseconds, cheap enough to run on every line the tools print.
func BenchmarkMask(b *testing.B) {
	const line = "failed to connect to `host=db1 port=5432 user=admin password=s3cret dbname=app`: server error (postgresql://admin:s3cret@db1/app)"
	for b.Loop() {
		Mask(line)
	}
}
