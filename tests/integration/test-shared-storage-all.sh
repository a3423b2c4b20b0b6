#!/usr/bin/env bash
# 2 units, mode=all (web and worker on each), one shared host directory, version left
# empty (the latest release, from the mirror's release API), upgrade by the action.
set -euo pipefail
SCENARIO=all
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

APP=concourse-ci

deploy() {
    model_setup it-all
    deploy_postgresql
    deploy_held "$APP" 2 all --config release-api-url="$(latest_api_url)"
    juju integrate "$APP:postgresql" postgresql
    mapfile -t units < <(units_of "$APP")
    attach_shared "${units[@]}"
    release_downloads "$APP"
    wait_until "$WAIT" "$APP active on v$V1" app_active "$APP" 2
}

verify_first_install() {
    check_one_download "$V1"
    mapfile -t units < <(units_of "$APP")
    check_same_file "$V1" "${units[@]}"
    check_disk_use "$V1"
    local u
    for u in "${units[@]}"; do
        [[ "$(workload "$u")" == "active: Web ready (v$V1)"*"; Worker ready (v$V1)" ]] ||
            die "$u is not web and worker: $(workload "$u")"
        check_web_api "$u" "$V1"
    done
}

concurrent_config() { check_concurrent_config "$V1" "$APP=2"; }

upgrade_by_action() {
    juju run "$APP/leader" upgrade version="$V2" --wait=5m
    wait_until "$WAIT" "every unit on v$V2" app_on_version "$APP" "$V2"
    wait_until "$WAIT" "$APP active" app_active "$APP" 2
    check_one_download "$V2"
    mapfile -t units < <(units_of "$APP")
    check_same_file "$V2" "${units[@]}"
    check_installed_version "$V2"
    check_disk_use "$V1" "$V2"
    juju run "$APP/leader" check-status verbose=true
}

add_unit() { check_add_unit "$APP" 3 "$V2"; }

main() {
    trap mirror_stop EXIT
    mirror_start
    step deploy
    step verify_first_install
    step concurrent_config
    step upgrade_by_action
    step add_unit
    log "PASS"
}

main "$@"
