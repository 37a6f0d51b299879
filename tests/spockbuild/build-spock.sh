#!/usr/bin/env bash
# build-spock.sh: builds one PostgreSQL + Spock combination for the
# end-to-end tests and the demo, and prints its bin directory on stdout.
#
#   tests/spockbuild/build-spock.sh [PG_VERSION [SPOCK_VERSION]]
#       defaults: 15.18 5.0.11
#
# Settings (environment):
#   ZODAN_SPOCK_SOURCES  where the archives come from: a directory holding
#                        postgresql-<v>.tar.bz2 and spock-<v>*.tar.gz (default:
#                        ../shared/spock-sources beside the repository, when it
#                        exists), or "download" to fetch the official
#                        PostgreSQL tarball and the pgEdge/spock tag (needs
#                        internet access).
#   ZODAN_SPOCK_CACHE    the cache directory (default ~/.cache/zodan/spock, or
#                        /var/cache/zodan/spock for root: the test clusters
#                        run as the postgres user, who cannot enter /root).
#                        A build lives in <cache>/pg<v>-spock<v>-<checksum>,
#                        keyed by both versions, both archives' SHA-256 and
#                        the recipe (what the script builds),
#                        and is reused when present and complete.
#   ZODAN_BUILD_JOBS     make -j (default: number of cores).
#
# Progress goes to stderr, one line per step, with the step's duration;
# compiler output goes to <build>/build.log and its tail is shown on failure.
# Run as root it installs the Debian build dependencies it needs.
#
# The archives are unmodified upstream sources; nothing built here is part of
# the repository.
set -euo pipefail

pg_version=${1:-15.18}
spock_version=${2:-5.0.11}
pg_major=${pg_version%%.*}
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $(id -u) == 0 ]]; then
	cache=${ZODAN_SPOCK_CACHE:-/var/cache/zodan/spock}
else
	cache=${ZODAN_SPOCK_CACHE:-${HOME}/.cache/zodan/spock}
fi
jobs=${ZODAN_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
# The builds below are top-level makes of their own, whoever runs this
# script: PostgreSQL generates its headers (utils/errcodes.h, ...) only at
# MAKELEVEL 0, so a MAKELEVEL inherited from "make spock" or "make
# test-e2e" would make the compile fail, as would an outer jobserver.
unset MAKELEVEL MAKEFLAGS MFLAGS
sources=${ZODAN_SPOCK_SOURCES:-}
if [[ -z $sources && -d $repo_root/../shared/spock-sources ]]; then
	sources=$(cd "$repo_root/../shared/spock-sources" && pwd)
fi

say() { printf 'build-spock: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ -n $sources ]] || die "no source archives: set ZODAN_SPOCK_SOURCES to a directory with postgresql-$pg_version.tar.bz2 and spock-$spock_version*.tar.gz, or to \"download\""

# Build dependencies (Debian 12). Installed only when missing and root.
deps=(build-essential bison flex libreadline-dev zlib1g-dev libssl-dev libicu-dev libjansson-dev pkg-config ca-certificates)
missing=()
for p in "${deps[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) == 0 ]]; then
		say "installing build dependencies: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	else
		die "missing build dependencies: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
	fi
fi

mkdir -p "$cache/archives"
# Readable by the unprivileged user the test clusters run as.
chmod 755 "$cache"

# fetch_archive NAME URL: the archive's path, from the source directory or
# downloaded into the cache.
pg_archive=postgresql-$pg_version.tar.bz2
if [[ $sources == download ]]; then
	pg_path=$cache/archives/$pg_archive
	[[ -s $pg_path ]] || { say "downloading $pg_archive"; curl -fsSL -o "$pg_path.part" "https://ftp.postgresql.org/pub/source/v$pg_version/$pg_archive" && mv "$pg_path.part" "$pg_path"; }
	spock_path=$cache/archives/spock-$spock_version.tar.gz
	[[ -s $spock_path ]] || { say "downloading spock v$spock_version"; curl -fsSL -o "$spock_path.part" "https://github.com/pgEdge/spock/archive/refs/tags/v$spock_version.tar.gz" && mv "$spock_path.part" "$spock_path"; }
else
	[[ -d $sources ]] || die "ZODAN_SPOCK_SOURCES=$sources is not a directory"
	pg_path=$sources/$pg_archive
	[[ -f $pg_path ]] || die "$pg_path not found"
	candidates=()
	for f in "$sources"/spock-"$spock_version".tar.gz "$sources"/spock-"$spock_version"-*.tar.gz; do
		[[ -f $f ]] && candidates+=("$f")
	done
	((${#candidates[@]} == 1)) || die "need exactly one spock-$spock_version*.tar.gz in $sources, found ${#candidates[@]}"
	spock_path=${candidates[0]}
fi

pg_sum=$(sha256sum "$pg_path" | cut -c1-64)
spock_sum=$(sha256sum "$spock_path" | cut -c1-64)
# recipe names what this script builds: change it when the build changes
# (another contrib module, other configure flags), so that no cached build
# of an older recipe is taken for it.
recipe="dblink auto_explain; openssl; no llvm; -O2 -g"
key=$(printf '%s %s %s %s\n' "$pg_sum" "$spock_sum" "$(uname -m)" "$recipe" | sha256sum | cut -c1-12)
prefix=$cache/pg$pg_version-spock$spock_version-$key

if [[ -f $prefix/.complete ]]; then
	say "reusing $prefix"
	echo "$prefix/bin"
	exit 0
fi

# One build at a time per combination: a second caller waits for the first.
exec 9>"$prefix.lock"
flock 9
if [[ -f $prefix/.complete ]]; then
	say "reusing $prefix (built by a concurrent run)"
	echo "$prefix/bin"
	exit 0
fi

rm -rf "$prefix"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/build.log
started=$(date +%s)

# step NAME CMD...: runs CMD with its output in the log, timing it.
step() {
	local name=$1 t0=$SECONDS
	shift
	say "$name ..."
	if ! "$@" >>"$log" 2>&1; then
		say "$name failed; last lines of the build log:"
		tail -n 40 "$log" >&2
		exit 1
	fi
	say "$name done in $((SECONDS - t0)) s"
}

step "unpacking PostgreSQL $pg_version" tar -xjf "$pg_path" -C "$work"
mkdir -p "$work/spock"
step "unpacking Spock $spock_version" tar -xzf "$spock_path" -C "$work/spock" --strip-components=1
pgsrc=$work/postgresql-$pg_version
patchdir=$work/spock/patches/$pg_major
[[ -d $patchdir ]] || die "Spock $spock_version has no patches for PostgreSQL $pg_major"

apply_patches() {
	local p
	for p in $(find "$patchdir" -maxdepth 1 -name '*.diff' | sort); do
		echo "applying $(basename "$p")"
		patch -d "$pgsrc" -p1 --forward --batch <"$p"
	done
}
step "patching PostgreSQL with Spock's patches/$pg_major" apply_patches
# -g: a server process that crashes in a test is reported with gdb's
# backtrace (see internal/pgtest), which names files and lines only with
# debug information. Spock's own build takes these CFLAGS from pg_config.
step "configuring PostgreSQL" sh -c "cd '$pgsrc' && ./configure --prefix='$prefix' --with-openssl --without-llvm CFLAGS='-O2 -g'"
step "compiling PostgreSQL (make -j$jobs)" make -C "$pgsrc" -j"$jobs"
step "installing PostgreSQL" make -C "$pgsrc" install
step "compiling and installing dblink" make -C "$pgsrc/contrib/dblink" -j"$jobs" install
# auto_explain: the end-to-end tests prove that no password reaches a log
# whatever it is set to.
step "compiling and installing auto_explain" make -C "$pgsrc/contrib/auto_explain" -j"$jobs" install
step "compiling Spock $spock_version" make -C "$work/spock" -j"$jobs" PG_CONFIG="$prefix/bin/pg_config"
# Serially: Spock's install target builds its spockctrl utility on the way,
# and does not order that for parallel make.
step "installing Spock $spock_version" make -C "$work/spock" PG_CONFIG="$prefix/bin/pg_config" install

cp "$log" "$prefix/build.log"
printf 'postgresql %s (%s)\nspock %s (%s)\n' "$pg_version" "$pg_sum" "$spock_version" "$spock_sum" >"$prefix/VERSIONS"
touch "$prefix/.complete"
say "built PostgreSQL $pg_version + Spock $spock_version in $(($(date +%s) - started)) s: $prefix"
echo "$prefix/bin"
