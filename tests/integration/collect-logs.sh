#!/usr/bin/env bash
# Collects what explains a failed scenario into $ARTIFACTS: status, the whole debug log,
# the mirror's access log (already there), the shared directories' layout, containers.
set -euo pipefail
SCENARIO=collect
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

collect() {
    juju status --relations --storage >"$ARTIFACTS/status.txt" 2>&1 || true
    juju status --format=yaml >"$ARTIFACTS/status.yaml" 2>&1 || true
    juju debug-log --replay --no-tail >"$ARTIFACTS/debug-log.txt" 2>&1 || true
    juju storage >"$ARTIFACTS/storage.txt" 2>&1 || true
    lxc list >"$ARTIFACTS/lxc-list.txt" 2>&1 || true
    # The redirections write the runner's own files; only the reads need root.
    # shellcheck disable=SC2024
    sudo find "$SHARED_ROOT" -maxdepth 4 -printf '%M %u %s %p\n' >"$ARTIFACTS/shared-dirs.txt" 2>&1 || true
    # shellcheck disable=SC2024
    sudo find "$SHARED_ROOT" -name '*.json' -path '*units*' -exec sh -c 'echo "== $1"; cat "$1"' _ {} \; \
        >"$ARTIFACTS/unit-states.txt" 2>&1 || true
    ls -l "$ARTIFACTS"
}

collect
