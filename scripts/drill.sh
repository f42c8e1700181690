#!/usr/bin/env bash
# make drill: everything the DR drill needs, then the drill, with each phase named as it starts
# and the elapsed time. Leaves the sandbox up for inspection (make sandbox-down removes it).
#   SCALE=small|tiny|medium|large   data scale of the shop database (default small)
#   SCENARIOS=all                   every scenario, 2.4 security_breach too (the default set leaves it out to stay
#                                   under 10 minutes); or names, e.g. SCENARIOS='database_recovery security_breach'
#   DRILL_ARGS='-e ...'             extra arguments for ansible-playbook playbooks/dr_drill.yml
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-small}"
BIN="$PWD/.venv/bin"
T0=$(date +%s)

phase() {
    local s=$(( $(date +%s) - T0 ))
    printf '\n==> [drill %02d:%02d] %s\n' $((s / 60)) $((s % 60)) "$*"
}

phase "Python environment (.venv, pinned tools and collections)"
make --no-print-directory venv

phase "Docker engine and the sandbox image"
make --no-print-directory image

phase "Sandbox secrets (the vault inventories/sandbox reads, written once)"
make --no-print-directory sandbox-secrets
export ANSIBLE_VAULT_IDENTITY_LIST="sandbox@$PWD/.secrets/sandbox.vault-password"

phase "Sandbox: server and S3 endpoint containers, PostgreSQL, the app, backups, shop data (scale $SCALE)"
"$BIN/ansible-playbook" playbooks/sandbox.yml -e sandbox_state=present -e "sandbox_scale=$SCALE"

phase "DR drill: playbooks/dr_drill.yml on inventories/sandbox"
rc=0
read -r -a extra <<<"${DRILL_ARGS:-}"
case "${SCENARIOS:-}" in
    "") ;;
    all) extra+=(-e '{"dr_drill_scenarios": ["backup_verification", "database_recovery", "application_rollback", "security_breach", "full_system_recovery"]}') ;;
    *) read -r -a names <<<"$SCENARIOS"
       extra+=(-e "$(printf '%s\n' "${names[@]}" | "$BIN/python" -c 'import json, sys; print(json.dumps({"dr_drill_scenarios": sys.stdin.read().split()}))')") ;;
esac
# profile_tasks prints the elapsed time at every task, so the progress of each phase is visible.
ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks \
    "$BIN/ansible-playbook" playbooks/dr_drill.yml -i inventories/sandbox -e "sandbox_scale=$SCALE" "${extra[@]}" || rc=$?

phase "Drill summary"
if [ -f reports/latest.json ]; then
    PYTHONPATH="$PWD/.collections" "$BIN/python" - <<'PY'
import json
from ansible_collections.tokotani.dr.plugins.module_utils.drill_report import render_table

with open("reports/latest.json", encoding="utf-8") as handle:
    report = json.load(handle)
print("\n".join(render_table(report)))
PY
    echo
    echo "reports: reports/latest.json reports/latest.md reports/latest.html (and the same under the drill's id)"
else
    echo "no report was written (the drill stopped before its scenarios: see the output above)"
fi
echo "The sandbox stays up for inspection: make sandbox-down removes it."
phase "done (exit $rc)"
exit "$rc"
