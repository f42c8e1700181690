#!/usr/bin/env bash
# Run molecule scenarios side by side (MOLECULE_JOBS at a time, default 3): most of a scenario's
# time is spent waiting on apt, npm and systemd, so three fit on two cores. Each scenario's output
# goes to .molecule-logs/<scenario>.log; a failing scenario's log tail is printed at the end.
#   scripts/molecule.sh                 every scenario under molecule/ (the longest first)
#   scripts/molecule.sh default pm2     those scenarios
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${MOLECULE_JOBS:-3}"
logs=.molecule-logs
mkdir -p "$logs"
if [ "$#" -gt 0 ]; then
    scenarios=("$@")
else
    mapfile -t found < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
    # The longest first (measured on a clean clone, longest to shortest), the short ones fill the slots
    # they leave: started in name order, the longest began last and the whole run took the sum of the tail.
    longest=(interruption drill rebuild db_recovery deploy_rollback breach)
    scenarios=()
    for name in "${longest[@]}"; do
        [[ " ${found[*]} " == *" $name "* ]] && scenarios+=("$name")
    done
    for name in "${found[@]}"; do
        [[ " ${longest[*]} " == *" $name "* ]] || scenarios+=("$name")
    done
fi
started=$(date +%s)
echo "[molecule] ${#scenarios[@]} scenario(s), $jobs at a time: ${scenarios[*]}"

run_one() {
    local name="$1" begin rc
    begin=$(date +%s)
    echo "[molecule] $name: started"
    if molecule test -s "$name" >"$logs/$name.log" 2>&1; then rc=0; else rc=$?; fi
    echo "$rc" >"$logs/$name.rc"
    echo "[molecule] $name: $([ "$rc" = 0 ] && echo passed || echo "FAILED (rc $rc)") in $(( $(date +%s) - begin )) s"
}
export -f run_one
export logs
rm -f "$logs"/*.rc
printf '%s\n' "${scenarios[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}

failed=()
for name in "${scenarios[@]}"; do
    [ "$(cat "$logs/$name.rc" 2>/dev/null || echo 1)" = 0 ] || failed+=("$name")
done
for name in "${failed[@]}"; do
    echo "================ $name: last 150 lines of $logs/$name.log"
    tail -n 150 "$logs/$name.log"
done
echo "[molecule] $(( ${#scenarios[@]} - ${#failed[@]} ))/${#scenarios[@]} passed in $(( $(date +%s) - started )) s"
[ "${#failed[@]}" -eq 0 ]
