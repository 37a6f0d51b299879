// Command snapshot freezes a zodan release's procedures: it renders the
// templates into the tern code package sql/snapshots/<release>/install.sql
// (see internal/render) and records its SHA-256 in the release registry,
// internal/install/releases.go. "make snapshot" runs it for zodan.Version
// (embed.go) from the repository root.
//
// A snapshot that exists is a released one and is never rewritten, unless
// -force says that release was never shipped (only the newest release's
// may be forced). A frozen release can be regenerated from an old
// checkout's templates with -templates and -version, to check it.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/install"
	"github.com/zodan-project/zodan/internal/render"
)

const registryFile = "internal/install/releases.go"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot: "+err.Error())
		os.Exit(1)
	}
}

func run() error {
	force := flag.Bool("force", false, "rewrite the snapshot of a release that exists but was never shipped (only the newest release's)")
	root := flag.String("root", ".", "the repository's root directory")
	templates := flag.String("templates", "", "render these templates (e.g. an old checkout's templates/) instead of the embedded ones; needs -version")
	version := flag.String("version", zodan.Version, "the release the templates are")
	out := flag.String("out", "", "write the snapshot here instead of sql/snapshots/<version>/install.sql, and leave the registry alone")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	if _, err := os.Stat(filepath.Join(*root, "embed.go")); err != nil {
		return fmt.Errorf("run it from the repository's root (or give -root): %w", err)
	}
	var dir fs.FS = zodan.Templates()
	if *templates != "" {
		dir = os.DirFS(*templates)
	} else if *version != zodan.Version {
		return fmt.Errorf("-version %s without -templates: the embedded templates are zodan %s's", *version, zodan.Version)
	}
	snap, err := render.SnapshotOf(dir, *version)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(snap))
	sha := hex.EncodeToString(sum[:])
	if *out != "" {
		if err := os.WriteFile(*out, []byte(snap), 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (zodan %s, sha256 %s)\n", *out, *version, sha)
		return nil
	}

	rel := filepath.Join("sql", "snapshots", *version, "install.sql")
	path := filepath.Join(*root, rel)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, []byte(snap)):
		fmt.Printf("%s is up to date (zodan %s, sha256 %s)\n", rel, *version, sha)
	case err == nil && !*force:
		return fmt.Errorf(`%s exists and differs from what the templates render: zodan %s is released and its procedures are frozen.
For a new release, bump zodan.Version in embed.go and run "make snapshot" again.
Only if zodan %s was never shipped: make snapshot FORCE=1`, rel, *version, *version)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	default:
		if err == nil {
			releases := install.Releases()
			if newest := releases[len(releases)-1]; newest.Version != *version {
				return fmt.Errorf("zodan %s is not the newest release (%s is): its snapshot never changes, even with -force", *version, newest.Version)
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(snap), 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (zodan %s, sha256 %s)\n", rel, *version, sha)
	}
	return register(*root, *version, sha)
}

// register records sha as the snapshot checksum of version in the
// registry, or says how to add the release.
func register(root, version, sha string) error {
	for _, r := range install.Releases() {
		if r.Version != version || r.SnapshotSHA256 == sha {
			continue
		}
		path := filepath.Join(root, registryFile)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		re := regexp.MustCompile(`(\{Version: "` + regexp.QuoteMeta(version) + `", Migration: \d+, SnapshotSHA256: ")[0-9a-f]{64}(")`)
		if len(re.FindAll(src, -1)) != 1 {
			return fmt.Errorf("%s: cannot find the entry of zodan %s to update; set its SnapshotSHA256 to %s", registryFile, version, sha)
		}
		if err := os.WriteFile(path, re.ReplaceAll(src, []byte("${1}"+sha+"${2}")), 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: zodan %s's snapshot checksum is now %s\n", registryFile, version, sha)
		fmt.Println(`Then: make render (dist/zodan.sql), and make test.`)
		return nil
	}
	for _, r := range install.Releases() {
		if r.Version == version {
			return nil // registered with this checksum
		}
	}
	next := install.Latest() + 1
	fmt.Printf(`zodan %[1]s is a new release. To ship it:
 1. add to the registry in %[2]s:
        {Version: "%[1]s", Migration: %[3]d, SnapshotSHA256: "%[4]s"},
 2. add the migration that installs it, sql/%03[3]d_release_%[1]s.sql: up
    {{ template "shared/install_code.sql" (index .releases "%[1]s") }}, down
    the same with the previous release (see sql/003_release_1.1.0.sql);
 3. make render (dist/zodan.sql), and make test.
`, version, registryFile, next, sha)
	return nil
}
