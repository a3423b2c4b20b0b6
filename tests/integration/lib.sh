#!/usr/bin/env bash
# Helpers shared by the real-Juju integration tests (sourced by the test-*.sh scripts).
#
# The scenarios run on one LXD host (a GitHub runner): a Juju 3.6 controller on
# localhost, a local release mirror (python3 -m http.server on the LXD bridge, its
# access log counts downloads), and one host directory per scenario given to every
# unit's container as a disk device at /var/lib/concourse (docs/shared-storage.md).
set -euo pipefail

: "${V1:=${CONCOURSE_V1:-8.2.4}}"            # version deployed first
: "${V2:=${CONCOURSE_V2:-8.2.5}}"            # upgrade target
: "${CHARM:=$PWD/dist/concourse-ci_amd64.charm}"
: "${MIRROR_DIR:=$HOME/concourse-mirror}"   # tarballs + .sha1 (restored from the CI cache)
: "${MIRROR_PORT:=8089}"
: "${SHARED_ROOT:=/srv/concourse-it}"       # one subdirectory per scenario
: "${ARTIFACTS:=$PWD/integration-artifacts}"
: "${ADD_UNIT_LIMIT:=180}"                  # seconds for a unit joining existing binaries
: "${WAIT:=1800}"                           # seconds for anything else to settle
: "${UPSTREAM:=https://github.com/concourse/concourse/releases/download}"
: "${BASE:=ubuntu@24.04}"
: "${SCENARIO:=it}"

MIRROR_LOG="$ARTIFACTS/mirror-access.log"
MIRROR_PID="$ARTIFACTS/mirror.pid"
mkdir -p "$ARTIFACTS"

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "$SCENARIO" "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}

# Runs one step function of a scenario, named in the log.
step() {
    log "== $1"
    "$@"
    log "ok $1"
}

assert_eq() { # expected actual what
    [[ "$1" == "$2" ]] || die "$3: expected '$1', got '$2'"
}

assert_lt() { # value limit what
    (($1 < $2)) || die "$3: $1 is not below $2"
}

tarball() { printf 'concourse-%s-linux-amd64.tgz' "$1"; }

# Polls "$@" every 10 s until it succeeds; fails after $1 seconds.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local start=$SECONDS
    until "$@"; do
        if ((SECONDS - start > limit)); then
            juju status --relations >&2 || true
            die "timed out after ${limit}s waiting for: $what"
        fi
        sleep 10
    done
}

# ---------------------------------------------------------------------------------------
# The release mirror

# Address of the LXD bridge on the host: the containers reach the mirror there.
host_ip() { lxc network get lxdbr0 ipv4.address | cut -d/ -f1; }

mirror_base() { printf 'http://%s:%s' "$(host_ip)" "$MIRROR_PORT"; }

# release-url for the charm, and one that 404s (see hold_downloads).
release_url() { printf '%s/concourse-{version}-linux-amd64.tgz' "$(mirror_base)"; }
held_url() { printf '%s/held/concourse-{version}-linux-amd64.tgz' "$(mirror_base)"; }
latest_api_url() { printf '%s/api/latest.json' "$(mirror_base)"; }

# Downloads each version's tarball and .sha1 from upstream once (skipped when the
# cached copy verifies), and records its unpacked size for the disk-use checks.
mirror_fetch() {
    mkdir -p "$MIRROR_DIR"
    local v t
    for v in "$@"; do
        t=$(tarball "$v")
        if ! (cd "$MIRROR_DIR" && sha1sum --quiet -c "$t.sha1" 2>/dev/null); then
            log "fetching $t from upstream"
            curl -fsSL --retry 5 -o "$MIRROR_DIR/$t.sha1" "$UPSTREAM/v$v/$t.sha1"
            curl -fsSL --retry 5 -o "$MIRROR_DIR/$t" "$UPSTREAM/v$v/$t"
            (cd "$MIRROR_DIR" && sha1sum --quiet -c "$t.sha1") || die "$t does not match its .sha1"
        fi
        tar -tvzf "$MIRROR_DIR/$t" | awk '{ s += $3 } END { print s }' >"$MIRROR_DIR/$v.unpacked-bytes"
    done
}

# Serves $MIRROR_DIR on the LXD bridge; the access log is the download count.
mirror_start() {
    mkdir -p "$MIRROR_DIR/api"
    printf '{"tag_name": "v%s", "assets": []}\n' "$V1" >"$MIRROR_DIR/api/latest.json"
    : >"$MIRROR_LOG"
    python3 -m http.server "$MIRROR_PORT" --bind "$(host_ip)" --directory "$MIRROR_DIR" \
        >>"$MIRROR_LOG" 2>&1 &
    echo $! >"$MIRROR_PID"
    wait_until 30 "the release mirror" curl -fsI "$(mirror_base)/api/latest.json" -o /dev/null
    log "mirror at $(mirror_base), log $MIRROR_LOG"
}

mirror_stop() {
    if [[ -s "$MIRROR_PID" ]]; then
        kill "$(cat "$MIRROR_PID")" 2>/dev/null || true
        rm -f "$MIRROR_PID"
    fi
}

# Number of GET requests for a version's tarball in the mirror's log.
downloads_of() {
    local n
    n=$(grep -c "\"GET /$(tarball "$1") HTTP" "$MIRROR_LOG" || true)
    printf '%s' "${n:-0}"
}

# ---------------------------------------------------------------------------------------
# Juju

status_json() { juju status --format=json; }

units_of() { # app
    status_json | jq -r --arg a "$1" '.applications[$a].units // {} | keys[]' | sort -V
}

container_of() { # unit
    local app=${1%/*}
    status_json | jq -r --arg a "$app" --arg u "$1" \
        '.machines[.applications[$a].units[$u].machine]["instance-id"]'
}

workload() { # unit → "current: message"
    local app=${1%/*}
    status_json | jq -r --arg a "$app" --arg u "$1" \
        '.applications[$a].units[$u]["workload-status"] | "\(.current): \(.message)"'
}

# True when the app has $2 units, all active and idle.
app_active() { # app count
    status_json | jq -e --arg a "$1" --argjson n "$2" '
        (.applications[$a].units // {}) as $u
        | ($u | length) == $n
          and ([$u[] | select(.["workload-status"].current == "active"
                              and .["juju-status"].current == "idle")] | length) == $n' \
        >/dev/null
}

# True when the app has $2 units whose agents are idle (their first hooks ran).
app_idle() { # app count
    status_json | jq -e --arg a "$1" --argjson n "$2" '
        (.applications[$a].units // {}) as $u
        | ($u | length) == $n
          and ([$u[] | select(.["juju-status"].current == "idle")] | length) == $n' \
        >/dev/null
}

# True when every unit of the app says it runs version $2.
app_on_version() { # app version
    local u
    for u in $(units_of "$1"); do
        [[ "$(workload "$u")" == "active: "*"(v$2)"* ]] || return 1
    done
}

leader_of() { # app
    status_json | jq -r --arg a "$1" \
        '.applications[$a].units | to_entries[] | select(.value.leader == true) | .key'
}

model_setup() { # model
    juju add-model "$1"
    juju model-config update-status-hook-interval=30s
}

deploy_postgresql() {
    juju deploy postgresql --channel 16/stable --base "$BASE"
}

# The shared directory of this scenario on the host.
shared_dir() { printf '%s/%s' "$SHARED_ROOT" "$SCENARIO"; }

# Gives each unit's container the scenario's shared directory at /var/lib/concourse.
attach_shared() { # unit...
    local dir u c
    dir=$(shared_dir)
    sudo mkdir -p "$dir"
    for u in "$@"; do
        c=$(container_of "$u")
        if lxc config device show "$c" | grep -q '^concourse-data:'; then
            continue
        fi
        log "attaching $dir to $u ($c)"
        lxc config device add "$c" concourse-data disk \
            source="$dir" path=/var/lib/concourse shift=true
    done
}

# Deploys an application whose units cannot download yet: release-url points at a
# path the mirror does not have, so units stay blocked until release_downloads. Juju
# mounts each unit's own storage at /var/lib/concourse when the unit is created, so the
# shared directory can only be attached afterwards (docs/shared-storage.md, Status note).
deploy_held() { # app count mode [extra juju deploy args...]
    local app=$1 n=$2 mode=$3
    shift 3
    juju deploy "$CHARM" "$app" -n "$n" --base "$BASE" \
        --config mode="$mode" \
        --config shared-storage=shared \
        --config release-url="$(held_url)" "$@"
    wait_until "$WAIT" "$app units to run their first hooks" app_idle "$app" "$n"
}

# Lets every unit of the apps download at once (one config change each, back to back).
release_downloads() { # app...
    local app
    for app in "$@"; do
        juju config "$app" release-url="$(release_url)"
    done
}

# ---------------------------------------------------------------------------------------
# Checks

# The mirror sent version $1's tarball exactly once.
check_one_download() { # version
    assert_eq 1 "$(downloads_of "$1")" "downloads of v$1 (mirror log)"
}

# Every unit sees the same file as the host: same inode, size and mtime, and its
# pointer targets the shared release.
check_same_file() { # version unit...
    local v=$1
    shift
    local rel="releases/$v/concourse/bin/concourse" want got u ptr
    want=$(sudo stat -c '%i %s %Y' "$(shared_dir)/$rel")
    for u in "$@"; do
        got=$(juju exec --unit "$u" -- stat -c '%i %s %Y' "/var/lib/concourse/$rel" | tr -d '\r')
        assert_eq "$want" "$got" "stat of $rel on $u vs the host"
        ptr=$(juju exec --unit "$u" -- readlink -f /var/lib/concourse-ci/current | tr -d '\r')
        assert_eq "/var/lib/concourse/releases/$v/concourse" "$ptr" "release pointer of $u"
    done
}

# The shared directory holds no more than 1.2 x the unpacked releases named.
check_disk_use() { # version...
    local used total=0 v
    used=$(sudo du -sb "$(shared_dir)" | cut -f1)
    for v in "$@"; do
        total=$((total + $(cat "$MIRROR_DIR/$v.unpacked-bytes")))
    done
    log "shared directory: $used bytes for releases of $total bytes"
    assert_lt $((used * 10)) $((total * 12)) "disk use of $(shared_dir) (x10) vs 1.2 x releases (x10)"
}

check_installed_version() { # version
    assert_eq "$1" "$(sudo cat "$(shared_dir)/.installed_version")" ".installed_version"
}

# Web answers on its port with the expected version.
check_web_api() { # web-unit version
    local addr got
    addr=$(status_json | jq -r --arg a "${1%/*}" --arg u "$1" '.applications[$a].units[$u]["public-address"]')
    got=$(curl -fsS "http://$addr:8080/api/v1/info" | jq -r .version)
    assert_eq "$2" "$got" "version reported by $1's /api/v1/info"
}

# Changes two options on every unit of the apps at once, checks each worker got them,
# that nothing was downloaded, then resets them.
check_concurrent_config() { # version count-per-app... as app=count
    local v=$1
    shift
    local before pair app n u
    before=$(downloads_of "$v")
    for pair in "$@"; do
        juju config "${pair%=*}" log-level=debug tag=integration
    done
    for pair in "$@"; do
        app=${pair%=*} n=${pair#*=}
        wait_until "$WAIT" "$app to apply the new config" app_active "$app" "$n"
        for u in $(units_of "$app"); do
            if juju exec --unit "$u" -- test -f /etc/concourse/worker.env; then
                juju exec --unit "$u" -- grep -qx 'CONCOURSE_LOG_LEVEL=debug' /etc/concourse/worker.env ||
                    die "$u: worker.env has no CONCOURSE_LOG_LEVEL=debug"
                juju exec --unit "$u" -- grep -qx 'CONCOURSE_TAG=integration' /etc/concourse/worker.env ||
                    die "$u: worker.env has no CONCOURSE_TAG=integration"
            fi
        done
    done
    assert_eq "$before" "$(downloads_of "$v")" "downloads of v$v during config changes"
    for pair in "$@"; do
        juju config "${pair%=*}" --reset log-level,tag
    done
    for pair in "$@"; do
        wait_until "$WAIT" "${pair%=*} to apply the reset" app_active "${pair%=*}" "${pair#*=}"
    done
}

# Adds a unit to an application whose release is on the shared volume and times it
# from `juju add-unit` (on a machine started beforehand) to active. The unit must reuse
# the release: no download. As at deploy time, release-url is held while the unit's own
# storage is mounted, then the shared directory is attached on top of it.
check_add_unit() { # app count-after version
    local app=$1 n=$2 v=$3 m before t0 unit
    before=$(downloads_of "$v")
    m=$(juju add-machine --base "$BASE" 2>&1 | sed -n 's/^created machine \([0-9][0-9]*\)$/\1/p')
    [[ -n "$m" ]] || die "juju add-machine did not name a machine"
    wait_until "$WAIT" "machine $m" machine_started "$m"
    juju config "$app" release-url="$(held_url)"
    t0=$SECONDS
    juju add-unit "$app" --to "$m"
    wait_until "$ADD_UNIT_LIMIT" "the new $app unit's first hooks" app_idle "$app" "$n"
    unit=$(status_json | jq -r --arg a "$app" --arg m "$m" \
        '.applications[$a].units | to_entries[] | select(.value.machine == $m) | .key')
    attach_shared "$unit"
    release_downloads "$app"
    wait_until "$ADD_UNIT_LIMIT" "$unit to be active" app_active "$app" "$n"
    log "$unit active $((SECONDS - t0))s after juju add-unit"
    assert_lt $((SECONDS - t0)) "$ADD_UNIT_LIMIT" "seconds from add-unit to active"
    assert_eq "$before" "$(downloads_of "$v")" "downloads of v$v when adding a unit"
    check_same_file "$v" "$unit"
}

machine_started() { # machine
    [[ "$(status_json | jq -r --arg m "$1" '.machines[$m]["juju-status"].current')" == "started" ]]
}
