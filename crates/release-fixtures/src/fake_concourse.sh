#!/usr/bin/env bash
# Fake `concourse` binary: a release-fixtures test fixture, never shipped.
# Rendered by release_fixtures::fake_concourse::render_script; @...@ markers are substituted there.
#
# Every invocation appends one JSON record per event to $FAKE_CONCOURSE_LOG
# (default /var/log/fake-concourse.log; if that cannot be written, to
# $FAKE_CONCOURSE_FALLBACK_LOG, default /tmp/fake-concourse.log). Rust tests parse it with
# release_fixtures::fake_concourse::read_log.
#
# Control files in $FAKE_CONCOURSE_RUN (default /run/fake-concourse), read when a signal arrives:
#   land-delay     seconds the worker takes to land or retire before exiting 0 (default 0)
#   ignore-term    if present, web and worker log "ignoring SIGTERM" and keep running
set -u

FAKE_VERSION='@VERSION@'
REPORTED_VERSION='@REPORTED_VERSION@'
BROKEN='@BROKEN@'

LOG="${FAKE_CONCOURSE_LOG:-/var/log/fake-concourse.log}"
FALLBACK_LOG="${FAKE_CONCOURSE_FALLBACK_LOG:-/tmp/fake-concourse.log}"
RUN_DIR="${FAKE_CONCOURSE_RUN:-/run/fake-concourse}"

SELF="$0"
case "$SELF" in /*) ;; *) SELF="$PWD/$SELF" ;; esac
SELF_RESOLVED="$(readlink -f -- "$0" 2>/dev/null || printf '%s' "$SELF")"
ARGS=("$@")
SUBCOMMAND="${1:-}"
SLEEP_PID=""

json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    s=${s//[[:cntrl:]]/?}
    printf '"%s"' "$s"
}

# Append one record: record EVENT [DETAIL] [SIGNALLED_PID]
record() {
    local event=$1 detail=${2:-} signalled=${3:-}
    local a name sep="" argv="[" env="{" user gid line
    for a in "${ARGS[@]}"; do
        argv+="$sep$(json_str "$a")"
        sep=","
    done
    argv+="]"
    sep=""
    for name in $(compgen -e); do
        case "$name" in
            CONCOURSE_* | http_proxy | https_proxy | no_proxy) ;;
            *) continue ;;
        esac
        env+="$sep$(json_str "$name"):$(json_str "${!name}")"
        sep=","
    done
    env+="}"
    user="$(id -un 2>/dev/null || printf '?')"
    gid="$(id -g 2>/dev/null || printf '0')"
    line="{\"ts\":${EPOCHREALTIME:-0},\"event\":$(json_str "$event")"
    line+=",\"subcommand\":$(json_str "$SUBCOMMAND"),\"argv\":$argv,\"env\":$env"
    line+=",\"exe\":$(json_str "$SELF"),\"exe_resolved\":$(json_str "$SELF_RESOLVED")"
    line+=",\"version\":$(json_str "$FAKE_VERSION"),\"pid\":$$,\"ppid\":$PPID"
    line+=",\"uid\":$EUID,\"gid\":$gid,\"user\":$(json_str "$user"),\"cwd\":$(json_str "$PWD")"
    line+=",\"path_env\":$(json_str "${PATH:-}")"
    if [ -n "$detail" ]; then line+=",\"detail\":$(json_str "$detail")"; fi
    if [ -n "$signalled" ]; then line+=",\"signalled_pid\":$signalled"; fi
    line+="}"
    append_line "$LOG" "$line" || append_line "$FALLBACK_LOG" "$line" || true
}

# append_line FILE LINE: one locked append; a file created here is world-writable so that
# services running as another user can append to it later.
append_line() {
    local file=$1 line=$2
    if [ ! -e "$file" ]; then
        mkdir -p -- "$(dirname -- "$file")" 2>/dev/null
        (umask 000 && : >>"$file") 2>/dev/null || return 1
    fi
    [ -w "$file" ] || return 1
    if command -v flock >/dev/null 2>&1; then
        { flock 9 && printf '%s\n' "$line" >&9; } 9>>"$file" 2>/dev/null
    else
        printf '%s\n' "$line" >>"$file" 2>/dev/null
    fi
}

finish() {
    local code=$1
    if [ -n "$SLEEP_PID" ]; then kill "$SLEEP_PID" 2>/dev/null; fi
    exit "$code"
}

broken() {
    record "start-failed" "broken binary"
    echo "concourse: fake broken binary (variant BrokenBinary) refuses to run" >&2
    exit 1
}

on_signal() {
    local sig=$1 delay=0
    case "$SUBCOMMAND:$sig" in
        worker:USR1 | worker:USR2)
            if [ "$sig" = USR1 ]; then record "landing"; else record "retiring"; fi
            if [ -r "$RUN_DIR/land-delay" ]; then delay="$(cat "$RUN_DIR/land-delay" 2>/dev/null)"; fi
            if [ -n "$delay" ] && [ "$delay" != 0 ]; then sleep "$delay" 2>/dev/null; fi
            if [ "$sig" = USR1 ]; then record "landed"; else record "retired"; fi
            rm -f -- "$RUN_DIR/worker.pid"
            finish 0
            ;;
        *:TERM | *:INT)
            if [ -e "$RUN_DIR/ignore-term" ]; then
                record "ignoring SIG$sig"
                return
            fi
            rm -f -- "$RUN_DIR/$SUBCOMMAND.pid"
            if [ "$SUBCOMMAND" = worker ]; then
                record "killed without landing" "SIG$sig"
                if [ "$sig" = TERM ]; then finish 143; else finish 130; fi
            fi
            record "stopped" "SIG$sig"
            finish 0
            ;;
        web:HUP)
            record "reloaded"
            ;;
        *)
            record "ignored signal" "SIG$sig"
            ;;
    esac
}

# ----- strictness: refuse to start as the real binary does (issue 14) -----
# The CONCOURSE_* variables this release's `concourse web` and `concourse worker` define
# (command, name, type, choices), from the charm's data/concourse-env-vars.tsv, which was
# extracted from concourse/concourse (cmd/concourse/*.go, atc/atccmd/command.go,
# skymarshal/skycmd/*_flags.go, atc/creds/*/manager_factory.go, worker/workercmd/*.go)
# and concourse/flag. Rendered by fake_concourse::render_script.
ENV_TABLE='@ENV_TABLE@'

# refuse MESSAGE: what the real binary prints on stderr before exiting 1.
refuse() {
    record "start-failed" "$1"
    printf 'error: %s\n' "$1" >&2
    exit 1
}

# is_rsa_key FILE: a PEM private key whose bytes are RSA (concourse/flag private_key.go:
# jwt.ParseRSAPrivateKeyFromPEM accepts PKCS#1 or PKCS#8 RSA under any label).
is_rsa_key() {
    local f=$1 first
    [ -r "$f" ] || return 2
    first="$(head -n1 -- "$f" 2>/dev/null)"
    case "$first" in
        "-----BEGIN RSA PRIVATE KEY-----") return 0 ;;
        "-----BEGIN PRIVATE KEY-----")
            if command -v openssl >/dev/null 2>&1; then
                openssl pkey -in "$f" -noout -text 2>/dev/null | head -n1 | grep -q 'RSA'
                return
            fi
            return 0
            ;;
        *) return 1 ;;
    esac
}

# strict_start SUBCOMMAND: the checks of go-flags and Runner() that make the real binary
# exit 1 at start (research: concourse.md 6.1-6.3), and stricter on one point: a
# CONCOURSE_* variable this release does not define is refused, where the real binary
# ignores it silently, so that no test passes with a misspelt setting.
strict_start() {
    local sub=$1 name row kind choices value c ok
    for name in $(compgen -e); do
        case "$name" in CONCOURSE_*) ;; *) continue ;; esac
        value="${!name}"
        row="$(printf '%s\n' "$ENV_TABLE" | awk -F'\t' -v s="$sub" -v n="$name" '$1 == s && $2 == n { print; exit }')"
        if [ -z "$row" ]; then
            refuse "concourse $sub defines no setting $name (the real binary would ignore it silently)"
        fi
        kind="$(printf '%s' "$row" | cut -f3)"
        choices="$(printf '%s' "$row" | cut -f4)"
        case "$kind" in
            choice | choice-list)
                ok=1
                local IFS_SAVE=$IFS
                IFS=','
                for c in $value; do
                    case "|$choices|" in *"|$c|"*) ;; *) ok=0 ;; esac
                done
                IFS=$IFS_SAVE
                if [ -z "$value" ]; then ok=0; fi
                [ "$ok" = 1 ] || refuse "Invalid value \`$value' for $name. Allowed values are: ${choices//|/, }"
                ;;
            bool)
                case "$value" in 1 | t | T | TRUE | true | True | 0 | f | F | FALSE | false | False | '') ;;
                    *) refuse "invalid argument for $name (expected bool): strconv.ParseBool: parsing \"$value\": invalid syntax" ;;
                esac
                ;;
            uint | int)
                case "$value" in '' | *[!0-9-]*) refuse "invalid argument for $name (expected $kind): \"$value\"" ;; esac
                ;;
            duration)
                if ! printf '%s' "$value" | grep -Eq '^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$'; then
                    refuse "invalid argument for $name (expected time.Duration): time: invalid duration \"$value\""
                fi
                ;;
            aes-key)
                case "${#value}" in 16 | 24 | 32) ;;
                    *) refuse "invalid argument for $name (expected flag.Cipher): failed to construct AES cipher: crypto/aes: invalid key size ${#value}" ;;
                esac
                ;;
            rsa-private-key-file)
                is_rsa_key "$value"
                case $? in
                    0) ;;
                    2) refuse "invalid argument for $name (expected flag.PrivateKey): failed to read private key file ($value)" ;;
                    *) refuse "invalid argument for $name (expected flag.PrivateKey): key is not a valid RSA private key" ;;
                esac
                ;;
            file)
                [ -f "$value" ] || refuse "invalid argument for $name (expected flag.File): stat $value: no such file or directory"
                ;;
        esac
    done
    # Required flags after LessenRequirements (cmd/concourse/web.go, worker/workercmd/worker.go).
    case "$sub" in
        web) [ -n "${CONCOURSE_TSA_HOST_KEY:-}" ] || refuse "the required flag \`--tsa-host-key' was not specified" ;;
        worker)
            [ -n "${CONCOURSE_WORK_DIR:-}" ] || refuse "the required flag \`--work-dir' was not specified"
            [ -n "${CONCOURSE_TSA_WORKER_PRIVATE_KEY:-}" ] || refuse "the required flag \`--tsa-worker-private-key' was not specified"
            ;;
    esac
    # Main-team auth (atc/atccmd/command.go configureAuthForDefaultTeam, atc/team.go
    # ErrAuthConfigInvalid): some main-team user or group must be configured.
    if [ "$sub" = web ]; then
        ok=0
        for name in $(compgen -e); do
            case "$name" in
                CONCOURSE_MAIN_TEAM_CONFIG | CONCOURSE_MAIN_TEAM_*_USER | CONCOURSE_MAIN_TEAM_*_GROUP | \
                    CONCOURSE_MAIN_TEAM_*_ORG | CONCOURSE_MAIN_TEAM_*_TEAM)
                    if [ -n "${!name}" ]; then ok=1; fi
                    ;;
            esac
        done
        [ "$ok" = 1 ] || refuse "default team auth not configured: auth config for the team does not have users and groups configured"
    fi
}

# Traps first, then the pid file, then the start record: whoever sees the pid file may
# signal us, and whoever sees the record finds the pid file.
run_until_signalled() {
    trap 'on_signal USR1' USR1
    trap 'on_signal USR2' USR2
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT
    trap 'on_signal HUP' HUP
    mkdir -p -- "$RUN_DIR" 2>/dev/null
    printf '%s\n' "$$" >"$RUN_DIR/$SUBCOMMAND.pid" 2>/dev/null
    record "start"
    echo "fake concourse $SUBCOMMAND $FAKE_VERSION running as pid $$"
    while :; do
        sleep 3600 &
        SLEEP_PID=$!
        wait "$SLEEP_PID" 2>/dev/null
        kill "$SLEEP_PID" 2>/dev/null
        SLEEP_PID=""
    done
}

generate_key() {
    local type="" file="" bits=2048
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            -t | --type) type="${2:-}"; shift 2 || break ;;
            --type=*) type="${1#--type=}"; shift ;;
            -f | --filename) file="${2:-}"; shift 2 || break ;;
            --filename=*) file="${1#--filename=}"; shift ;;
            -b | --bits) bits="${2:-}"; shift 2 || break ;;
            --bits=*) bits="${1#--bits=}"; shift ;;
            *) echo "error: unknown flag \`$1'" >&2; record "generate-key-failed" "unknown flag $1"; exit 1 ;;
        esac
    done
    if [ -z "$file" ]; then
        echo "error: the required flag \`-f, --filename' was not specified" >&2
        record "generate-key-failed" "missing -f"
        exit 1
    fi
    case "$type" in rsa | ssh) ;; *)
        echo "error: Invalid value \`$type' for option \`-t, --type'. Allowed values are: rsa or ssh" >&2
        record "generate-key-failed" "bad type $type"
        exit 1
        ;;
    esac
    case "$bits" in '' | *[!0-9]*) echo "error: invalid bits \`$bits'" >&2; exit 1 ;; esac
    rm -f -- "$file" "$file.pub"
    local how
    if command -v ssh-keygen >/dev/null 2>&1 &&
        ssh-keygen -q -t rsa -b "$bits" -m PEM -N '' -C '' -f "$file" </dev/null >/dev/null 2>&1; then
        how="ssh-keygen"
        if [ "$type" = rsa ]; then rm -f -- "$file.pub"; fi
    elif command -v openssl >/dev/null 2>&1 &&
        openssl genrsa -traditional -out "$file" "$bits" >/dev/null 2>&1; then
        how="openssl"
        if [ "$type" = ssh ]; then
            printf 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQFAKE%s fake-concourse\n' \
                "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$file.pub" || exit 1
        fi
    else
        how="fake"
        {
            echo "-----BEGIN RSA PRIVATE KEY-----"
            echo "RkFLRS1LRVktTk9ULVJFQUwtZmFrZS1jb25jb3Vyc2UtZ2VuZXJhdGUta2V5"
            echo "-----END RSA PRIVATE KEY-----"
        } >"$file" || exit 1
        if [ "$type" = ssh ]; then
            echo "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQFAKE fake-concourse" >"$file.pub" || exit 1
        fi
    fi
    echo "wrote private key to $file"
    if [ "$type" = ssh ]; then echo "wrote ssh public key to $file.pub"; fi
    record "generate-key" "$type $file $bits $how"
    exit 0
}

drain_worker() {
    local sig=$1 pid=""
    if [ -r "$RUN_DIR/worker.pid" ]; then pid="$(cat "$RUN_DIR/worker.pid" 2>/dev/null)"; fi
    case "$pid" in '' | *[!0-9]*) pid="" ;; esac
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill "-$sig" "$pid" 2>/dev/null; then
        record "$SUBCOMMAND" "sent SIG$sig" "$pid"
    else
        record "$SUBCOMMAND" "no running worker"
    fi
    exit 0
}

case "$SUBCOMMAND" in
    --version | -v | version)
        if [ "$BROKEN" = 1 ]; then broken; fi
        record "version"
        printf '%s\n' "$REPORTED_VERSION"
        exit 0
        ;;
    web | worker)
        if [ "$BROKEN" != 0 ]; then broken; fi
        if [ "$SUBCOMMAND" = worker ] && [ "$EUID" -ne 0 ]; then
            record "start-failed" "worker must be run as root"
            echo "worker must be run as root" >&2
            exit 1
        fi
        strict_start "$SUBCOMMAND"
        run_until_signalled
        ;;
    generate-key)
        generate_key "$@"
        ;;
    land-worker)
        drain_worker USR1
        ;;
    retire-worker)
        drain_worker USR2
        ;;
    migrate)
        record "migrate"
        exit 0
        ;;
    "")
        echo "Usage: concourse [OPTIONS] <command>" >&2
        exit 1
        ;;
    *)
        record "unknown-command"
        echo "Unknown command \`$SUBCOMMAND'" >&2
        exit 1
        ;;
esac
