#!/usr/bin/env bash
# 3 units, mode=auto (one web, two workers), one shared host directory, version pinned.
# Mirrors the simulator scenarios: deploy N units with one download, add a unit with no
# download, concurrent config changes, upgrade by `juju config version=` with one download.
set -euo pipefail
SCENARIO=auto
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

APP=concourse-ci

deploy() {
    model_setup it-auto
    deploy_postgresql
    deploy_held "$APP" 3 auto --config version="$V1"
    juju integrate "$APP:postgresql" postgresql
    mapfile -t units < <(units_of "$APP")
    attach_shared "${units[@]}"
    release_downloads "$APP"
    wait_until "$WAIT" "$APP active on v$V1" app_active "$APP" 3
}

verify_first_install() {
    check_one_download "$V1"
    mapfile -t units < <(units_of "$APP")
    check_same_file "$V1" "${units[@]}"
    check_disk_use "$V1"
    local webs
    webs=$(status_json | jq '[.applications["concourse-ci"].units[]
        | select(.["workload-status"].message | startswith("Web ready"))] | length')
    assert_eq 1 "$webs" "web units in mode=auto"
    check_web_api "$(status_json | jq -r '.applications["concourse-ci"].units | to_entries[]
        | select(.value["workload-status"].message | startswith("Web ready")) | .key')" "$V1"
}

concurrent_config() { check_concurrent_config "$V1" "$APP=3"; }

upgrade_by_config() {
    juju config "$APP" version="$V2"
    wait_until "$WAIT" "every unit on v$V2" app_on_version "$APP" "$V2"
    wait_until "$WAIT" "$APP active" app_active "$APP" 3
    check_one_download "$V2"
    mapfile -t units < <(units_of "$APP")
    check_same_file "$V2" "${units[@]}"
    check_installed_version "$V2"
    check_disk_use "$V1" "$V2"
}

add_unit() { check_add_unit "$APP" 4 "$V2"; }

main() {
    trap mirror_stop EXIT
    mirror_start
    step deploy
    step verify_first_install
    step concurrent_config
    step upgrade_by_config
    step add_unit
    log "PASS"
}

main "$@"
