package install

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/render"
)

// Release is a zodan release whose procedures are frozen: the tern code
// package sql/snapshots/<Version>/install.sql, installed by migration
// Migration. A release once listed here never changes: not its
// migration, not a byte of its snapshot (SnapshotSHA256; a test holds the
// files to it), so that every node at a version runs the same code, and a
// downgrade restores exactly what that release installed.
type Release struct {
	Version        string
	Migration      int32
	SnapshotSHA256 string
}

// releases, oldest first. "make snapshot" writes the newest one's
// snapshot and checksum (see internal/release/cmd/snapshot).
var releases = []Release{
	{Version: "1.0.0", Migration: 2, SnapshotSHA256: "ec254c372d6167671b2f9d6cc205fcd9940c9c33ff8d597d772ef0d0717348d6"},
	{Version: "1.1.0", Migration: 3, SnapshotSHA256: "ea38375146f8711bf424d3351b6f86918f0ff85a3d9edda7e98531e2dd8bdd8c"},
}

// Releases lists every release this build knows, oldest first.
func Releases() []Release { return slices.Clone(releases) }

// NewestRelease is the release this build installs (zodan.Version).
func NewestRelease() Release { return releases[len(releases)-1] }

// FindRelease is the release named version ("1.0.0").
func FindRelease(version string) (Release, bool) {
	for _, r := range releases {
		if r.Version == version {
			return r, true
		}
	}
	return Release{}, false
}

// ReleaseAt is the release whose procedures a node at migration version v
// has: the newest one installed by a migration up to v. There is none
// below the first release's migration (version 1 is the journal only), nor
// above this build's newest migration.
func ReleaseAt(v int32) (Release, bool) {
	if v > Latest() {
		return Release{}, false
	}
	var found Release
	ok := false
	for _, r := range releases {
		if r.Migration <= v {
			found, ok = r, true
		}
	}
	return found, ok
}

// ReleaseList describes the releases for help texts: "1.0.0 (version 2),
// 1.1.0 (version 3)".
func ReleaseList() string {
	var parts []string
	for _, r := range releases {
		parts = append(parts, fmt.Sprintf("%s (version %d)", r.Version, r.Migration))
	}
	return strings.Join(parts, ", ")
}

// SnapshotPath is where the release's snapshot is, in zodan.Migrations().
func (r Release) SnapshotPath() string { return "snapshots/" + r.Version + "/install.sql" }

// Snapshot is the release's frozen code package, checked against its
// registered checksum.
func (r Release) Snapshot() (string, error) {
	body, err := fs.ReadFile(zodan.Migrations(), r.SnapshotPath())
	if err != nil {
		return "", fmt.Errorf("zodan %s's procedures: %w", r.Version, err)
	}
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != r.SnapshotSHA256 {
		return "", fmt.Errorf("sql/%s has SHA-256 %s, but zodan %s was released with %s: a released snapshot must never change", r.SnapshotPath(), got, r.Version, r.SnapshotSHA256)
	}
	if r.Version == zodan.Version {
		// A build whose templates say otherwise than its own release's
		// snapshot would install code nobody reviewed under that
		// release's name, or hide a template change from its developer.
		current, err := render.Snapshot()
		if err != nil {
			return "", err
		}
		if current != string(body) {
			return "", errors.New(StaleSnapshotAdvice())
		}
	}
	return string(body), nil
}

// StaleSnapshotAdvice says what to do when templates/ no longer renders
// zodan.Version's snapshot.
func StaleSnapshotAdvice() string {
	return fmt.Sprintf("templates/ changed since zodan %[1]s's snapshot (sql/snapshots/%[1]s/install.sql), whose procedures are frozen: "+
		"bump zodan.Version in embed.go, run `make snapshot` and add the migration it names; "+
		"only while zodan %[1]s is unreleased, `make snapshot FORCE=1` refreezes it instead", zodan.Version)
}

// Code is the release's procedures for a node, and their checksum (as
// zodan_install.code_sha256 records it).
func (r Release) Code(ro render.Options) (code, sha string, err error) {
	snap, err := r.Snapshot()
	if err != nil {
		return "", "", err
	}
	code, err = render.Eval(snap, ro)
	if err != nil {
		return "", "", fmt.Errorf("zodan %s's procedures: %w", r.Version, err)
	}
	return code, render.Checksum(code), nil
}
