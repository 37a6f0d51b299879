#!/usr/bin/env bash
# run-tap.sh: runs Spock's own TAP tests for Zodan (tests/tap/t/*zodan*.pl in
# the Spock source archive) against OUR procedures instead of upstream's
# samples/Z0DAN/zodan.sql and zodremove.sql, and prints a per-test summary.
#
#   tests/upstream/run-tap.sh [PG_VERSION SPOCK_VERSION [TEST...]]
#       defaults: 15.18 5.0.11, and every Zodan test of that Spock version
#       (010 runs our zodan CLI in place of upstream's zodan.py).
#       TEST: 009, 009_zodan_add_remove_nodes or t/009_zodan_add_remove_nodes.pl
#
# Settings (environment):
#   ZODAN_SPOCK_SOURCES  directory with spock-<v>*.tar.gz (as for
#                        tests/spockbuild/build-spock.sh; default
#                        ../shared/spock-sources beside the repository), or
#                        "download" (build-spock.sh fetched it into its cache).
#   ZODAN_SPOCK_BINDIR   bin directory of a PostgreSQL + Spock build to use
#                        (default: the one build-spock.sh PG SPOCK prints,
#                        building it when missing, as "make test-e2e" does).
#   ZODAN_SPOCK_CACHE    build-spock.sh's cache (read for "download").
#   ZODAN_TAP_SQL        psql script to test (default: dist/zodan.sql when it
#                        was rendered for these versions, i.e. PostgreSQL 15 +
#                        Spock 5.0; otherwise a fresh render of the templates
#                        for this PostgreSQL major and Spock release).
#   ZODAN_TAP_RENDER=1   always render the current templates instead of
#                        taking dist/zodan.sql.
#   ZODAN_TAP_BASE_PORT  first port of the test nodes (default: 5441, the
#                        harness's own, or the next free block of four).
#   ZODAN_TAP_TIMEOUT    seconds one test file may run (default 3600).
#   ZODAN_TAP_KEEP=1     keep the work directory (logs) even when all pass;
#                        after a failure it is always kept.
#   ZODAN_TAP_NO_RERUN=1 do not run a test once more when it failed while a
#                        server process crashed (see "Run" below).
#   ZODAN_LOLOR_SOURCE   lolor source (a directory or a .tar.gz) for test 033;
#                        without it 033 skips itself (its harness would clone
#                        lolor from GitHub, which CI cannot reach).
#   ZODAN_TEST_OS_USER   the unprivileged user the servers run as when this
#                        script runs as root (default postgres), as for the
#                        end-to-end tests.
#
# Nothing of Spock is copied into the repository: the tests are unpacked at
# run time into a temporary directory, and only that copy is adjusted (ports,
# paths), never the test logic.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
pg_version=${1:-15.18}
spock_version=${2:-5.0.11}
shift $(($# < 2 ? $# : 2))
requested_tests=("$@")
pg_major=${pg_version%%.*}
timeout_s=${ZODAN_TAP_TIMEOUT:-3600}

say() { printf 'run-tap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

# --- Who runs the servers --------------------------------------------------
# PostgreSQL refuses to run as root, so as root everything the tests do runs
# as an unprivileged user; otherwise as ourselves.
if [[ $(id -u) == 0 ]]; then
	os_user=${ZODAN_TEST_OS_USER:-postgres}
	id "$os_user" >/dev/null 2>&1 ||
		die "running as root, so PostgreSQL must run as an unprivileged user, and \"$os_user\" does not exist (create it, or set ZODAN_TEST_OS_USER)"
else
	os_user=$(id -un)
fi

# --- Perl dependencies -----------------------------------------------------
# prove and Test::More come with Debian's perl; 011 also needs IPC::Run
# (libipc-run-perl), which a fresh machine lacks.
perl_missing=()
command -v prove >/dev/null 2>&1 || perl_missing+=(perl)
perl -MTest::More -e1 2>/dev/null || perl_missing+=(perl)
perl -MIPC::Run -e1 2>/dev/null || perl_missing+=(libipc-run-perl)
if ((${#perl_missing[@]})); then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		say "installing ${perl_missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2
		apt-get install -y -qq --no-install-recommends "${perl_missing[@]}" >&2
	else
		die "missing Perl pieces: ${perl_missing[*]} (apt-get install ${perl_missing[*]})"
	fi
fi

# --- PostgreSQL + Spock binaries --------------------------------------------
# The same choice as the Makefile's SPOCK_BINDIR_CMD: an explicit bin dir, or
# the cached build of build-spock.sh (which builds it on first use).
bindir=${ZODAN_SPOCK_BINDIR:-}
if [[ -z $bindir ]]; then
	bindir=$("$repo_root/tests/spockbuild/build-spock.sh" "$pg_version" "$spock_version")
fi
[[ -x $bindir/postgres && -x $bindir/psql && -x $bindir/initdb ]] || die "no PostgreSQL in $bindir"

# --- The Spock source archive -------------------------------------------------
# Found as build-spock.sh finds it: ZODAN_SPOCK_SOURCES, else
# ../shared/spock-sources beside the repository; "download" means the copy
# build-spock.sh put into its cache.
sources=${ZODAN_SPOCK_SOURCES:-}
if [[ -z $sources && -d $repo_root/../shared/spock-sources ]]; then
	sources=$(cd "$repo_root/../shared/spock-sources" && pwd)
fi
[[ -n $sources ]] || die "no source archives: set ZODAN_SPOCK_SOURCES"
if [[ $sources == download ]]; then
	if [[ $(id -u) == 0 ]]; then cache=${ZODAN_SPOCK_CACHE:-/var/cache/zodan/spock}; else cache=${ZODAN_SPOCK_CACHE:-$HOME/.cache/zodan/spock}; fi
	candidates=("$cache/archives/spock-$spock_version.tar.gz")
	[[ -f ${candidates[0]} ]] || candidates=()
else
	candidates=()
	for f in "$sources"/spock-"$spock_version".tar.gz "$sources"/spock-"$spock_version"-*.tar.gz; do
		[[ -f $f ]] && candidates+=("$f")
	done
fi
((${#candidates[@]} == 1)) || die "need exactly one spock-$spock_version*.tar.gz in $sources, found ${#candidates[@]}"
archive=${candidates[0]}

# --- Work directory ---------------------------------------------------------
# Everything lives here: the unpacked tests, the node data directories and
# the logs. Owned by the server user, who must write into all of it.
work=$(mktemp -d "${TMPDIR:-/tmp}/zodan-tap.XXXXXX")
chmod 755 "$work"
keep=${ZODAN_TAP_KEEP:-0}
cleanup() {
	stop_nodes
	if [[ $keep == 1 ]]; then
		rm -rf "$work/nodes" "$work/pg" "$work/lolor-src" "$work/contrib"
		say "logs kept in $work/logs"
	else
		rm -rf "$work"
	fi
}

as_user() {
	# A clean environment: no PG* variable of ours may redirect psql, and the
	# harness finds its binaries through PATH.
	local envs=(HOME="$work" USER="$os_user" LANG=C.UTF-8 LC_ALL=C.UTF-8
		PATH="$bindir:/usr/local/bin:/usr/bin:/bin" TESTLOGDIR="$work/logs")
	if [[ $(id -u) == 0 ]]; then
		runuser -u "$os_user" -- env -i "${envs[@]}" "$@"
	else
		env -i "${envs[@]}" "$@"
	fi
}

# Stops the postmasters of our node directories (a test that dies or times
# out leaves them running; its END block does not always get to them).
stop_nodes() {
	local d
	for d in "$work"/nodes/*/; do
		[[ -f $d/postmaster.pid ]] || continue
		as_user "$bindir/pg_ctl" stop -D "$d" -m immediate -w >/dev/null 2>&1 || true
	done
}
trap cleanup EXIT

say "unpacking tests/tap and samples/Z0DAN from $(basename "$archive")"
# The archive has one top-level directory (git archive --prefix); keep the
# tests/tap and samples/Z0DAN layout, since the tests read
# ../../samples/Z0DAN/* relative to tests/tap, their working directory.
mkdir -p "$work/spock" "$work/logs" "$work/nodes"
tar -xzf "$archive" -C "$work/spock" --strip-components=1 --wildcards '*/tests/tap/*' '*/samples/Z0DAN/*'
tap=$work/spock/tests/tap
z0dan=$work/spock/samples/Z0DAN
[[ -f $tap/t/SpockTest.pm ]] || die "no tests/tap/t/SpockTest.pm in $archive"

# --- Our procedures in place of upstream's --------------------------------------
# Upstream's zodan.sql/zodremove.sql and its Python tools go, so that nothing
# of upstream's Zodan can run by accident; its test helpers
# (wait_subscription.sql, the pgbench scripts) stay.
rm -f "$z0dan"/zodan.sql "$z0dan"/zodremove.sql "$z0dan"/zodan.py "$z0dan"/zodremove.py "$z0dan"/zodan_cleanup.sql
sql=${ZODAN_TAP_SQL:-}
case $spock_version in
5.*) progress=remote_lsn ;;      # spock.progress column in Spock 5.0
*) progress=remote_commit_lsn ;; # and from 6.0 on (see internal/render)
esac
if [[ -z $sql ]]; then
	if [[ ${ZODAN_TAP_RENDER:-0} != 1 && $pg_major == 15 && $progress == remote_lsn ]]; then
		# dist/zodan.sql is rendered for PostgreSQL 15 + Spock 5.0 ("make render").
		sql=$repo_root/dist/zodan.sql
	else
		say "rendering the templates for PostgreSQL $pg_major, spock.progress.$progress"
		sql=$work/zodan-rendered.sql
		(cd "$repo_root" && go run ./cmd/zodan-install render --out "$sql" \
			--pg-version "$pg_major" --progress-column "$progress")
	fi
fi
[[ -f $sql ]] || die "$sql not found"
cp "$sql" "$z0dan/zodan.sql"
# Our remove_node is in zodan.sql already; the tests still load zodremove.sql
# (psql -f, or \i), so it must exist and do nothing.
cat >"$z0dan/zodremove.sql" <<'EOF'
-- Intentionally empty: zodan's spock.remove_node is installed by zodan.sql.
EOF

# Upstream's Python tools (zodan.py add_node|health-check, zodremove.py
# remove_node, which 010 runs) have the same flags as our zodan CLI, which
# also answers to add_node, health_check and remove_node: in their place go
# two wrappers that run our zodan, built from this repository.
mkdir -p "$work/bin"
(cd "$repo_root" && go build -o "$work/bin/zodan" ./cmd/zodan)
for tool in zodan.py zodremove.py; do
	printf '#!/bin/sh\n# Runs zodan (this repository'"'"'s CLI) where upstream'"'"'s %s was.\nexec %s "$@"\n' \
		"$tool" "$work/bin/zodan" >"$z0dan/$tool"
	chmod 755 "$z0dan/$tool"
done

# --- Which tests -----------------------------------------------------------------
# Default: every Zodan test of this Spock version.
tests=()
if ((${#requested_tests[@]} == 0)); then
	for f in "$tap"/t/*zodan*.pl; do
		tests+=("$(basename "$f" .pl)")
	done
else
	for t in "${requested_tests[@]}"; do
		t=$(basename "$t" .pl)
		m=("$tap"/t/"$t"*.pl)
		[[ -f ${m[0]} ]] || die "no test $t in Spock $spock_version"
		((${#m[@]} == 1)) || die "test $t is ambiguous: ${m[*]##*/}"
		tests+=("$(basename "${m[0]}" .pl)")
	done
fi

test_files=()
for t in "${tests[@]}"; do test_files+=("$tap/t/$t.pl"); done

# --- Extensions the tests need beyond build-spock.sh's build ------------------
# 012 runs CREATE EXTENSION amcheck on n1 (and the schema copy then needs it
# on the new nodes too); build-spock.sh builds only dblink and auto_explain
# of contrib. 033 needs lolor: its ensure_lolor() accepts lolor when
# lolor.control is in pg_config's sharedir, and otherwise clones GitHub
# (which CI cannot reach) and installs into the build (which the server user
# cannot write), then skips itself. Either is installed here into a private
# copy of the build (PostgreSQL installations are relocatable), so that the
# cached build stays exactly what build-spock.sh made.
private_copy() {
	[[ -d $work/pg ]] && return 0
	local prefix
	prefix=$(cd "$bindir/.." && pwd)
	say "copying $prefix to add extensions"
	cp -a "$prefix" "$work/pg"
	bindir=$work/pg/bin
}
sharedir() { "$bindir/pg_config" --sharedir; }
if grep -qi 'CREATE EXTENSION amcheck' "${test_files[@]}" /dev/null &&
	[[ ! -f $(sharedir)/extension/amcheck.control ]]; then
	if [[ $sources == download ]]; then pg_archive=$cache/archives/postgresql-$pg_version.tar.bz2; else pg_archive=$sources/postgresql-$pg_version.tar.bz2; fi
	[[ -f $pg_archive ]] || die "$pg_archive not found (needed to build contrib/amcheck)"
	private_copy
	say "building contrib/amcheck from $(basename "$pg_archive")"
	mkdir -p "$work/contrib"
	tar -xjf "$pg_archive" -C "$work/contrib" --strip-components=2 "postgresql-$pg_version/contrib/amcheck"
	make -C "$work/contrib/amcheck" USE_PGXS=1 PG_CONFIG="$bindir/pg_config" install >"$work/logs/amcheck_build.log" 2>&1 ||
		{ tail -n 20 "$work/logs/amcheck_build.log" >&2; die "building amcheck failed"; }
fi
if [[ -n ${ZODAN_LOLOR_SOURCE:-} ]] && grep -q 'ensure_lolor()' "${test_files[@]}" /dev/null; then
	private_copy
	say "building lolor from $ZODAN_LOLOR_SOURCE"
	mkdir -p "$work/lolor-src"
	if [[ -d $ZODAN_LOLOR_SOURCE ]]; then
		cp -a "$ZODAN_LOLOR_SOURCE"/. "$work/lolor-src"
	else
		tar -xzf "$ZODAN_LOLOR_SOURCE" -C "$work/lolor-src" --strip-components=1
	fi
	make -C "$work/lolor-src" USE_PGXS=1 PG_CONFIG="$bindir/pg_config" install >"$work/logs/lolor_build.log" 2>&1 ||
		{ tail -n 20 "$work/logs/lolor_build.log" >&2; die "building lolor failed"; }
fi

# --- Ports ---------------------------------------------------------------------
# The harness uses BASE_PORT..BASE_PORT+2 (009 starts n3 on BASE_PORT+2 by
# hand). Other clusters (other test runs) may hold 5441: take the first
# block of four free ports from there, checking TCP and /tmp's sockets.
port_free() {
	local p=$1
	[[ -e /tmp/.s.PGSQL.$p ]] && return 1
	if command -v ss >/dev/null; then
		! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .
	else
		! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
	fi
}
base_port=${ZODAN_TAP_BASE_PORT:-}
if [[ -z $base_port ]]; then
	base_port=5441
	while ! { port_free "$base_port" && port_free $((base_port + 1)) && port_free $((base_port + 2)) && port_free $((base_port + 3)); }; do
		base_port=$((base_port + 10))
	done
fi

# --- Adjust the temporary copy of the harness ---------------------------------
# Only where the harness hard-codes machine-wide places, so that runs cannot
# collide with each other or with other clusters: the base port, the node
# data directories (/tmp/tmp_spock_node_*), 009's n3 log directory
# (/tmp/logs) and the lolor clone directory. The test logic is untouched.
sed -i "s/^my \$BASE_PORT = '5441';/my \$BASE_PORT = '$base_port';/" "$tap/t/SpockTest.pm"
grep -q "^my \$BASE_PORT = '$base_port';" "$tap/t/SpockTest.pm" || die "could not set BASE_PORT in SpockTest.pm"
sed -i -e "s#/tmp/tmp_spock_node#$work/nodes/tmp_spock_node#g" \
	-e "s#'/tmp/logs'#'$work/logs'#g" \
	-e "s#/tmp/spock_lolor_build#$work/lolor-build#g" \
	"$tap"/t/*.pl "$tap"/t/SpockTest.pm

if [[ $(id -u) == 0 ]]; then
	chown -R "$os_user" "$work"
fi

say "PostgreSQL $pg_version + Spock $spock_version ($bindir), ports from $base_port"
# Which state of the repository was tested (the templates change often).
rev=$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)
say "procedures: $sql (repository at $rev)"
say "work directory: $work (run as $os_user)"

# --- Run ---------------------------------------------------------------------------
# One prove per test file, so each is timed on its own and a failing one
# does not stop the others. prove -v keeps every assertion in the .tap file;
# SpockTest.pm sends each test's commands and its die message to
# logs/<test>.log, and the servers log to logs/00<port>.log.
#
# A server process that crashes (Spock's apply workers do, now and then:
# "was terminated by signal 11") fails the test that was running. Such a
# test runs once more, and counts as passed only if it passes then; the
# crash lines and the first run's failures are printed, and its prove
# output stays as <test>.first.tap. ZODAN_TAP_NO_RERUN=1 turns this off.
declare -A log_marks
# mark_logs remembers how long every log under the work directory is.
mark_logs() {
	local f
	log_marks=()
	while IFS= read -r f; do
		log_marks[$f]=$(wc -l <"$f")
	done < <(find "$work" -name '*.log' -type f)
}
# new_crashes prints the crash lines logged since mark_logs.
new_crashes() {
	local f from
	while IFS= read -r f; do
		from=${log_marks[$f]:-0}
		(($(wc -l <"$f") < from)) && from=0
		tail -n +$((from + 1)) "$f" | grep -E 'was terminated by signal (4|6|7|8|11):' | sed "s#^#$(basename "$f"): #" || true
	done < <(find "$work" -name '*.log' -type f)
}
failed=0
summary=()
total_started=$SECONDS
for t in "${tests[@]}"; do
	tapf=$work/logs/$t.tap
	for attempt in 1 2; do
		say "running $t ..."
		mark_logs
		started=$SECONDS
		rc=0
		as_user bash -c 'cd "$1" && exec timeout --kill-after=30 "$2" prove -v "t/$3.pl"' _ \
			"$tap" "$timeout_s" "$t" >"$tapf" 2>&1 || rc=$?
		took=$((SECONDS - started))
		stop_nodes
		oks=$(grep -cE '^ok [0-9]+' "$tapf" || true)
		noks=$(grep -cE '^not ok [0-9]+' "$tapf" || true)
		plan=$(grep -oE '^1\.\.[0-9]+' "$tapf" | head -1 | cut -d. -f3 || true)
		# prove shows a skip_all as "t/<test>.pl .. skipped: <reason>".
		if grep -qE '^1\.\.0 # ?(SKIP|skip)|^t/[^ ]+ \.+ skipped:|^Result: NOTESTS' "$tapf"; then
			result=SKIPPED
		elif ((rc == 0)); then
			result=PASS
		elif ((rc == 124 || rc == 137)); then
			result="FAIL (timed out after ${timeout_s}s)"
		else
			result=FAIL
		fi
		if [[ $result == FAIL* && $attempt == 1 && -z ${ZODAN_TAP_NO_RERUN:-} ]]; then
			crashes=$(new_crashes)
			if [[ -n $crashes ]]; then
				echo "== $t: $result while a server process crashed; running it once more"
				printf '%s\n' "$crashes" | cut -c1-300 | sed 's/^/   /'
				grep -E '^not ok|^# +(Failed|Looks like)' "$tapf" | sed 's/^/   first run: /' || true
				cp "$tapf" "$work/logs/$t.first.tap"
				continue
			fi
		fi
		break
	done
	if [[ $attempt == 2 && $result == PASS ]]; then
		result="PASS (2nd run, after a server crash)"
	fi
	[[ $result == FAIL* ]] && failed=1
	line=$(printf '%-32s %-8s %3s ok, %3s not ok, plan %-4s %5ss' "$t" "$result" "$oks" "$noks" "${plan:-?}" "$took")
	summary+=("$line")
	echo "== $line"
	if [[ $result == SKIPPED ]]; then
		grep -E '^1\.\.0|skipped:' "$tapf" | sed 's/^/   /'  || true
	elif [[ $result != PASS* ]]; then
		# The failed assertions, and why the script stopped, if it died:
		# the harness's die message and the last errors psql printed.
		grep -E '^not ok|^# +(Failed|Looks like)' "$tapf" | sed 's/^/   /' || true
		if [[ -f $work/logs/$t.log ]]; then
			grep -E 'Command failed|ERROR:|died|at t/' "$work/logs/$t.log" | tail -n 8 | cut -c1-400 | sed 's/^/   log: /' || true
		fi
		keep=1
	fi
done

echo
echo "Spock $spock_version TAP tests (PostgreSQL $pg_version) against $(basename "$sql"):"
printf '  %s\n' "${summary[@]}"
echo "  total wall clock: $((SECONDS - total_started))s"
if ((failed)); then
	echo "  logs: $work/logs (<test>.tap: prove output; <test>.log: the test's commands; 00<port>.log: servers)"
	exit 1
fi
