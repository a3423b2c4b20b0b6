#!/usr/bin/env bash
# Two applications on one shared host directory: concourse-web (mode=web, 1 unit) and
# concourse-worker (mode=worker, 2 units) related over tsa/flight. One download serves
# both; each application upgrades by config, still with one download in all.
set -euo pipefail
SCENARIO=web-worker
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

WEB=concourse-web
WORKER=concourse-worker

deploy() {
    model_setup it-web-worker
    deploy_postgresql
    deploy_held "$WEB" 1 web --config version="$V1"
    deploy_held "$WORKER" 2 worker --config version="$V1"
    juju integrate "$WEB:postgresql" postgresql
    juju integrate "$WEB:tsa" "$WORKER:flight"
    mapfile -t units < <(units_of "$WEB"; units_of "$WORKER")
    attach_shared "${units[@]}"
    release_downloads "$WEB" "$WORKER"
    wait_until "$WAIT" "$WEB active" app_active "$WEB" 1
    wait_until "$WAIT" "$WORKER active" app_active "$WORKER" 2
}

verify_first_install() {
    check_one_download "$V1"
    mapfile -t units < <(units_of "$WEB"; units_of "$WORKER")
    check_same_file "$V1" "${units[@]}"
    check_disk_use "$V1"
    check_web_api "$(units_of "$WEB")" "$V1"
}

concurrent_config() { check_concurrent_config "$V1" "$WEB=1" "$WORKER=2"; }

upgrade_by_config() {
    juju config "$WEB" version="$V2"
    juju config "$WORKER" version="$V2"
    wait_until "$WAIT" "$WEB on v$V2" app_on_version "$WEB" "$V2"
    wait_until "$WAIT" "$WORKER on v$V2" app_on_version "$WORKER" "$V2"
    check_one_download "$V2"
    mapfile -t units < <(units_of "$WEB"; units_of "$WORKER")
    check_same_file "$V2" "${units[@]}"
    check_disk_use "$V1" "$V2"
}

add_unit() { check_add_unit "$WORKER" 3 "$V2"; }

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
