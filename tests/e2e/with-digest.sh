#!/usr/bin/env bash
# with-digest.sh COMMAND...: runs a "go test -v" command, streaming its
# output, and when it fails prints, at the very end, what each failed test
# itself said: its t.Log/t.Error/t.Fatal messages (continuations cut to a
# few lines), without the node log tails the e2e helpers dump on failure,
# then one line per failed test with the last thing it said, which for a
# t.Fatal is the reason. A CI log often shows only its last lines; those
# lines then name the test, the file:line and the reason instead of a
# PostgreSQL log tail. Exits with the command's status.
set -uo pipefail

log=$(mktemp "${TMPDIR:-/tmp}/zodan-e2e.XXXXXX")
trap 'rm -f "$log"' EXIT

"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ]; then
	exit 0
fi

# digest prints what each failed test of log $1 said (see the top).
digest() {
# A message keeps its first and last lines: a failed CALL states its error
# first, a failed CLI run (exit, stdout, stderr) last.
awk -v head="${DIGEST_HEAD:-4}" -v tail="${DIGEST_TAIL:-10}" '
function flush(   i, text) {
	if (hdr != "") {
		text = hdr "\n"
		for (i = 1; i <= n; i++) {
			if (i > head && i <= n - tail) {
				if (i == head + 1) text = text "        ... (" n - head - tail " lines)\n"
				continue
			}
			text = text cont[i] "\n"
		}
		blocks[cur] = blocks[cur] text
		if (!context) last[cur] = hdr
	}
	hdr = ""; n = 0; skip = 0; context = 0
}
/^=== (RUN|CONT|NAME|PAUSE) / { flush(); cur = $3; next }
/^ *--- FAIL: / {
	flush()
	if (!($3 in failed)) order[++nfailed] = $3
	failed[$3] = 1
	next
}
/^ +[A-Za-z0-9_]+\.go:[0-9]+: / {
	flush()
	# Node log tails and "keeping ... in DIR" are context, not the reason.
	if ($0 ~ /log tail:$/ || $0 ~ /: keeping [^ ]+ in /) { skip = 1; next }
	hdr = $0
	# A crash report is shown, but the reason stays the failure itself.
	if ($0 ~ /: a server process crashed during this test:$/) context = 1
	next
}
/^        / {
	if (skip || hdr == "") next
	cont[++n] = $0
	next
}
{ flush() }
END {
	flush()
	if (nfailed == 0) exit
	print ""
	print "=== What the failed tests said (node log tails left out):"
	for (i = 1; i <= nfailed; i++) {
		t = order[i]
		if (blocks[t] == "") continue
		print "--- " t ":"
		printf "%s", blocks[t]
	}
	print ""
	for (i = 1; i <= nfailed; i++) {
		t = order[i]
		line = last[t]
		sub(/^ +/, "", line)
		if (line == "") {
			# A parent whose subtest failed says nothing itself.
			for (j = 1; j <= nfailed; j++) if (index(order[j], t "/") == 1) line = "subtest failed"
			if (line != "") continue
			line = "(nothing of its own: it panicked or timed out; see above)"
		}
		if (length(line) > 300) line = substr(line, 1, 300) "..."
		print "FAILED " t ": " line
	}
}' "$1"
}

digest "$log"

# A PostgreSQL server process that crashed ("was terminated by signal"
# 11, 6, 7, 8 or 4: Spock's apply workers, now and then) fails whatever
# test was using that node. Every test reports each crash on its nodes
# (with gdb's backtrace where gdb is installed), failed or not. Failed
# tests get one more run when any crash was reported, and the suite
# passes only if each of them passes then; the crash and the first
# failure stay in the log above. Signal 9 is left out: a fault test sends
# it on purpose. ZODAN_E2E_NO_RERUN=1 turns this off.
failed=$(grep -oE '^--- FAIL: [A-Za-z0-9_]+' "$log" | awk '{print $3}' | sort -u | tr '\n' ' ')
if [ -z "${ZODAN_E2E_NO_RERUN:-}" ] && [ -n "${failed// /}" ] && grep -qE 'was terminated by signal (4|6|7|8|11):' "$log"; then
	pattern="^($(echo $failed | tr ' ' '|'))\$"
	args=()
	replace=0
	for a in "$@"; do
		if [ "$replace" -eq 1 ]; then args+=("$pattern"); replace=0; continue; fi
		args+=("$a")
		if [ "$a" = "-run" ]; then replace=1; fi
	done
	echo
	echo "=== A server process crashed during this run (\"was terminated by signal\" above); running once more: $failed"
	"${args[@]}" 2>&1 | tee "$log.rerun"
	rc2=${PIPESTATUS[0]}
	all=1
	for t in $failed; do
		grep -q "^--- PASS: $t " "$log.rerun" || all=0
	done
	if [ "$rc2" -eq 0 ] && [ "$all" -eq 1 ]; then
		echo "=== passed on the second run after a server crash: $failed"
		rm -f "$log.rerun"
		exit 0
	fi
	digest "$log.rerun"
	rm -f "$log.rerun"
	exit 1
fi
exit "$rc"
