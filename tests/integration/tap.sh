# TAP-style checks for the shell tests. Needs $work (a scratch directory);
# counts into $passed and $failed.
#
#   check DESCRIPTION COMMAND...            passes if COMMAND exits 0
#   run_exit CODE TEXT DESCRIPTION COMMAND...
#                                           passes if COMMAND exits CODE and,
#                                           unless TEXT is empty, prints TEXT
# A failure shows the command's output, indented.
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }

check() {
	local what=$1
	shift
	if "$@" >"$work/out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/#   /' "$work/out"; fi
}

run_exit() {
	local want=$1 text=$2 what=$3 st=0
	shift 3
	"$@" >"$work/out" 2>&1 || st=$?
	if [ "$st" -eq "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$work/out"; }; then
		ok "$what (exit $st)"
	else
		fail "$what: exit $st, expected $want${text:+ and '$text'}"
		sed 's/^/#   /' "$work/out"
	fi
}
