#!/bin/bash
# Fake `concourse` binary: a release-fixtures test fixture, never shipped.
# Rendered by release_fixtures::fake_concourse::render_script; @...@ markers are substituted there.
# Its rules come from concourse/concourse v7.14.3; fake_concourse.rs cites the files.
#
# Every invocation appends one JSON record per event to $FAKE_CONCOURSE_LOG
# (default /var/log/fake-concourse.log; if that cannot be written, to
# $FAKE_CONCOURSE_FALLBACK_LOG, default /tmp/fake-concourse.log). Rust tests parse it with
# release_fixtures::fake_concourse::read_log. `web` and `worker` also print upstream's
# readiness lines (lager JSON) on stdout: tsa.listening, atc.listening,
# worker.beacon-runner.beacon.registered.
#
# Control files in $FAKE_CONCOURSE_RUN (default /run/fake-concourse), read when needed:
#   startup-delay    seconds web and worker spend starting (before the TSA listens / the
#                    beacon runs; default 0)
#   land-delay       seconds the worker takes to land or retire before exiting 0 (default 0)
#   ignore-term      if present, a started web or worker logs "ignoring SIGTERM" and runs on
#   containers       number of build containers a registered worker runs (default 0)
#   tsa-unreachable  if present, this worker cannot reach any TSA (a cut network)
#   beacon-retry     seconds between registration attempts (default 5, as upstream)
set -u

FAKE_VERSION='@VERSION@'
REPORTED_VERSION='@REPORTED_VERSION@'
# 0 normal; 1 broken binary; 2 web and worker fail to start; 3 the worker fails to start
BROKEN='@BROKEN@'
# The database schema this version migrates to, and every schema version it knows.
SCHEMA='@SCHEMA@'
KNOWN_SCHEMAS='@KNOWN_SCHEMAS@'

LOG="${FAKE_CONCOURSE_LOG:-/var/log/fake-concourse.log}"
FALLBACK_LOG="${FAKE_CONCOURSE_FALLBACK_LOG:-/tmp/fake-concourse.log}"
RUN_DIR="${FAKE_CONCOURSE_RUN:-/run/fake-concourse}"

SELF="$0"
case "$SELF" in /*) ;; *) SELF="$PWD/$SELF" ;; esac
# `readlink -f "$0"` without its process (every call records it): the directory's physical
# path from `cd -P` in a subshell; only a script that is itself a symlink needs readlink.
if [ -L "$SELF" ]; then
    SELF_RESOLVED="$(readlink -f -- "$SELF" 2>/dev/null || printf '%s' "$SELF")"
else
    SELF_RESOLVED="$(cd -P -- "${SELF%/*}/" 2>/dev/null && printf '%s/%s' "${PWD%/}" "${SELF##*/}")" || SELF_RESOLVED=$SELF
fi
# The effective user's name and group, as `id -un` and `id -g` print them, without their
# two processes (every call of this script records them): /proc's `Gid:` line is real,
# effective, saved, fs; names come from /etc/passwd (the service users are made with useradd).
USER_NAME="?"
GROUP_ID=0
while read -r key _ egid _; do
    if [ "$key" = "Gid:" ]; then GROUP_ID=$egid; break; fi
done </proc/self/status 2>/dev/null
while IFS=: read -r name _ uid _; do
    if [ "$uid" = "$EUID" ]; then USER_NAME=$name; break; fi
done </etc/passwd 2>/dev/null
ARGS=("$@")
SUBCOMMAND="${1:-}"
TSA_PID=""
CONN_PID=""
REGISTERED_AT=""
HANDSHAKE_ERROR=""
TRUSTED_FPS=","
CONTAINERS_STARTED=""
# Where a registration attempt's answer arrives (see register).
CONN_OUT="${TMPDIR:-/tmp}/fake-concourse-conn.$$"
# A drain signal the beacon has not acted on yet: land | retire.
DRAIN=""

# Below, nothing that can run once traps are set uses `$(...)`: bash 5.2 may run a pending
# trap while it parses a command substitution and then fails to parse the trap ("unexpected
# EOF while looking for matching `)'"), losing the signal. Functions return in REPLY.

# json_str VALUE: REPLY = VALUE as a JSON string.
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    s=${s//[[:cntrl:]]/?}
    REPLY="\"$s\""
}

# Append one record: record EVENT [DETAIL] [SIGNALLED_PID]. A signal arriving meanwhile
# is acted on afterwards (its handler may record too, and the log lock is not reentrant).
record() {
    IN_RECORD=1
    record_line "$@"
    IN_RECORD=""
    run_deferred
}

record_line() {
    local event=$1 detail=${2:-} signalled=${3:-}
    local a name key sep="" argv="[" env="{" line
    for a in "${ARGS[@]}"; do
        json_str "$a"
        argv+="$sep$REPLY"
        sep=","
    done
    argv+="]"
    sep=""
    for name in "${!CONCOURSE_@}" http_proxy https_proxy no_proxy; do
        [ -n "${!name+set}" ] || continue
        json_str "$name"
        key=$REPLY
        json_str "${!name}"
        env+="$sep$key:$REPLY"
        sep=","
    done
    env+="}"
    json_str "$event"
    line="{\"ts\":${EPOCHREALTIME:-0},\"event\":$REPLY"
    json_str "$SUBCOMMAND"
    line+=",\"subcommand\":$REPLY,\"argv\":$argv,\"env\":$env"
    json_str "$SELF"
    line+=",\"exe\":$REPLY"
    json_str "$SELF_RESOLVED"
    line+=",\"exe_resolved\":$REPLY"
    json_str "$FAKE_VERSION"
    line+=",\"version\":$REPLY,\"pid\":$$,\"ppid\":$PPID"
    json_str "$USER_NAME"
    line+=",\"uid\":$EUID,\"gid\":$GROUP_ID,\"user\":$REPLY"
    json_str "$PWD"
    line+=",\"cwd\":$REPLY"
    json_str "${PATH:-}"
    line+=",\"path_env\":$REPLY"
    if [ -n "$detail" ]; then
        json_str "$detail"
        line+=",\"detail\":$REPLY"
    fi
    if [ -n "$signalled" ]; then line+=",\"signalled_pid\":$signalled"; fi
    line+="}"
    append_line "$LOG" "$line" || append_line "$FALLBACK_LOG" "$line" || true
}

# Signals: every trap calls on_signal; what a signal does depends on the phase (the
# handler named in ON_<SIG>, called with the signal's name; empty: nothing).
ON_HUP="" ON_INT="" ON_TERM="" ON_USR1="" ON_USR2=""
IN_RECORD=""
DEFERRED=""

on_signal() {
    if [ -n "$IN_RECORD" ]; then
        DEFERRED+=" $1"
        return
    fi
    act "$1"
}

act() {
    local h=""
    case "$1" in
        HUP) h=$ON_HUP ;;
        INT) h=$ON_INT ;;
        TERM) h=$ON_TERM ;;
        USR1) h=$ON_USR1 ;;
        USR2) h=$ON_USR2 ;;
    esac
    if [ -n "$h" ]; then "$h" "$1"; fi
}

run_deferred() {
    local sig
    while [ -n "${DEFERRED// /}" ]; do
        DEFERRED=${DEFERRED# }
        sig=${DEFERRED%% *}
        DEFERRED=${DEFERRED#"$sig"}
        act "$sig"
    done
}

trap_signals() {
    local sig
    for sig in HUP INT TERM USR1 USR2; do
        # shellcheck disable=SC2064 # the signal's name is fixed now
        trap "on_signal $sig" "$sig"
    done
}

# append_line FILE LINE: one locked append; a file created here is world-writable so that
# services running as another user can append to it later.
append_line() {
    local file=$1 line=$2
    if [ ! -e "$file" ]; then
        mkdir -p -- "${file%/*}" 2>/dev/null
        (umask 000 && : >>"$file") 2>/dev/null || return 1
    fi
    [ -w "$file" ] || return 1
    if command -v flock >/dev/null 2>&1; then
        { flock 9 && printf '%s\n' "$line" >&9; } 9>>"$file" 2>/dev/null
    else
        printf '%s\n' "$line" >>"$file" 2>/dev/null
    fi
}

broken() {
    record "start-failed" "broken binary"
    echo "concourse: fake broken binary (variant BrokenBinary) refuses to run" >&2
    exit 1
}

# Most calls are the charm's release checks: `--version` and the schema a release supports
# (`migrate --supported-db-version`, which needs no database). They end here, before bash
# reads the rest of the script.
case "$SUBCOMMAND" in
    --version | -v | version)
        if [ "$BROKEN" = 1 ]; then broken; fi
        record "version"
        printf '%s\n' "$REPORTED_VERSION"
        exit 0
        ;;
    migrate)
        if [ "$#" -eq 2 ] && [ "$2" = --supported-db-version ] &&
            [ -z "${CONCOURSE_MIGRATE_DB_TO_VERSION:-}" ]; then
            record "migrate" "supported-db-version"
            printf '%s\n' "$SCHEMA"
            exit 0
        fi
        ;;
esac

# lager SOURCE MESSAGE [LEVEL]: one lager JSON line on stdout, as upstream logs (the journal
# under systemd). Info lines are dropped at CONCOURSE_LOG_LEVEL=error or fatal.
lager() {
    local source=$1 message=$2 level=${3:-info}
    case "${CONCOURSE_LOG_LEVEL:-info}:$level" in
        error:info | fatal:info | fatal:error) return 0 ;;
    esac
    printf '{"timestamp":"%s","level":"%s","source":"%s","message":"%s","data":{}}\n' \
        "${EPOCHREALTIME:-0}" "$level" "$source" "$message"
}

# control NAME DEFAULT: REPLY = the first line of a control file, or DEFAULT.
control() {
    local v=""
    if [ -r "$RUN_DIR/$1" ]; then read -r v <"$RUN_DIR/$1" 2>/dev/null || true; fi
    REPLY=${v:-$2}
}

# to_us SECONDS: sets US to SECONDS in microseconds ("1.5" -> 1500000; invalid: 0).
to_us() {
    local s=$1 int frac
    US=0
    case "$s" in '' | *[!0-9.]* | *.*.*) return ;; esac
    int=${s%%.*}
    frac=${s#"$int"}
    frac=${frac#.}000000
    US=$((10#${int:-0} * 1000000 + 10#${frac:0:6}))
}

# nap SECONDS: waits without a process (the builtin `read` on a pipe nobody writes to):
# every unit of every test shares one pid namespace, and a `sleep` ten times a second in
# every web and worker made pids wrap around (pid_max 32768) within minutes. A trapped
# signal interrupts the read and runs its trap at once, as Go handles a signal at once.
QUIET_FD=""
nap() {
    if [ -z "$QUIET_FD" ]; then exec {QUIET_FD}<> <(:); fi
    read -r -t "$1" -u "$QUIET_FD" _ || true
}

# pause SECONDS: short naps, so the loop notices the time. No command substitution here:
# a trapped signal that arrives while bash waits for one, or while a trap interrupts
# `wait`, can be lost.
pause() {
    local now until
    to_us "$1"
    now=${EPOCHREALTIME//[.,]/}
    until=$((10#$now + US))
    while :; do
        now=${EPOCHREALTIME//[.,]/}
        [ "$((10#$now))" -lt "$until" ] || break
        nap 0.1
    done
}

stop_children() {
    local p
    for p in "$TSA_PID" "$CONN_PID"; do
        if [ -n "$p" ]; then kill "$p" 2>/dev/null; fi
    done
    if [ -e "$CONN_OUT" ]; then rm -f -- "$CONN_OUT"; fi
}

finish() {
    stop_children
    rm -f -- "$RUN_DIR/$SUBCOMMAND.pid"
    exit "$1"
}

# die_by_signal SIG EVENT: what the Go runtime does with SIGHUP, SIGINT or SIGTERM while no
# handler is installed: the process dies by the signal (no exit code; systemd counts it as
# clean). Go os/signal, "Default behavior of signals in Go programs".
die_by_signal() {
    local sig=$1 event=$2
    record "$event" "SIG$sig"
    stop_children
    rm -f -- "$RUN_DIR/$SUBCOMMAND.pid"
    trap - "$sig"
    kill -s "$sig" "$$"
    sleep 1
    exit 1
}

generate_key() {
    local type="" file="" bits=1024
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
            printf 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQFAKE%s fake-concourse\n' \
                "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$file.pub" || exit 1
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

# The other short subcommands end here, before bash reads the service code below.
case "$SUBCOMMAND" in
    web | worker)
        if [ "$BROKEN" = 1 ]; then broken; fi
        # Upstream fails this early too: flag parsing and the first checks, milliseconds
        # after exec, long before anything listens.
        if [ "$BROKEN" = 2 ] || { [ "$BROKEN" = 3 ] && [ "$SUBCOMMAND" = worker ]; }; then
            record "start-failed" "fails to start (variant CrashOnStart)"
            echo "error: fake concourse $FAKE_VERSION fails to start" >&2
            exit 1
        fi
        ;;
    migrate) ;;
    generate-key)
        generate_key "$@"
        ;;
    land-worker)
        drain_worker USR1
        ;;
    retire-worker)
        drain_worker USR2
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

web_killed_early() { die_by_signal "$1" "killed before the TSA started"; }
worker_killed() { die_by_signal "$1" "killed without landing"; }
signal_lost() { record "ignored signal" "SIG$1 before the beacon ran"; }

# key_fingerprint FILE: the sha256 of the first two words of a public key file
# ("ssh-rsa AAAA...") or of the whole file; empty when unreadable. (Before traps only.)
key_fingerprint() {
    local f=$1 w1 w2
    [ -r "$f" ] || return 0
    read -r w1 w2 _ <"$f" || true
    if [ -n "${w2:-}" ]; then
        printf '%s %s' "$w1" "$w2" | sha256sum | cut -c1-32
    else
        sha256sum <"$f" | cut -c1-32
    fi
}

# ----- strictness: refuse to start as the real binary does (issue 14) -----
# The CONCOURSE_* variables this release's `concourse web` and `concourse worker` define
# (command, name, type, choices), from the charm's data/concourse-env-vars.tsv, which was
# extracted from concourse/concourse (cmd/concourse/*.go, atc/atccmd/command.go,
# skymarshal/skycmd/*_flags.go, atc/creds/*/manager_factory.go, worker/workercmd/*.go)
# and concourse/flag. Rendered by fake_concourse::render_script as two associative arrays
# keyed by `<command>:<name>` (its type; its choices, `|`-separated): a start looks names
# up instead of reading the table line by line (bash reads a here-string a byte per
# syscall: 25 ms per start).
declare -A ENV_KIND=(@ENV_KIND@)
declare -A ENV_CHOICES=(@ENV_CHOICES@)

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
    local sub=$1 name kind choices value c ok
    # Phase A (flag parsing): no handler yet; SIGUSR1/2 are caught by the Go runtime and
    # dropped, so they must not kill the fake while it checks (no subprocess per lookup:
    # the check is quick, like flag parsing).
    trap ':' USR1 USR2
    # every CONCOURSE_* variable is from the environment (the script sets none)
    for name in "${!CONCOURSE_@}"; do
        value="${!name}"
        if [ -z "${ENV_KIND[$sub:$name]+set}" ]; then
            refuse "concourse $sub defines no setting $name (the real binary would ignore it silently)"
        fi
        kind="${ENV_KIND[$sub:$name]}"
        choices="${ENV_CHOICES[$sub:$name]-}"
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
                if ! [[ "$value" =~ ^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$ ]]; then
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
        for name in "${!CONCOURSE_MAIN_TEAM_@}"; do
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

# dex_connectors: what web's dex server makes of the auth settings (RunCommand.Runner,
# after the migrations). skymarshal/dexserver/dexserver.go NewDexServerConfig: local users
# need --password-connector=local (exit 1 otherwise); a connector whose Validate fails is
# skipped silently (its Serialize error is ignored): skymarshal/skycmd/github_flags.go,
# gitlab_flags.go (client id and secret), oidc_flags.go (issuer, client id and secret),
# oauth_flags.go (auth, token and userinfo URLs, client id and secret), ldap_flags.go
# (host, bind DN and password). An enabled connector is opened at once (concourse/dex
# server/server.go NewServer): LDAP without a user search base DN or username attribute
# makes web exit 1 (connector/ldap/ldap.go). The fake records what the real one only
# does: `connectors` (those enabled) and `connector skipped` (which, and why).
dex_connectors() {
    local enabled="" id needs v missing any
    if [ -n "${CONCOURSE_ADD_LOCAL_USER:-}" ]; then
        if [ "${CONCOURSE_PASSWORD_CONNECTOR:-local}" != local ]; then
            refuse "can only set --add-local-user with --password-connector=local"
        fi
        enabled="local"
    fi
    for id in "github:CLIENT_ID CLIENT_SECRET" "gitlab:CLIENT_ID CLIENT_SECRET" \
        "oidc:ISSUER CLIENT_ID CLIENT_SECRET" \
        "oauth:AUTH_URL TOKEN_URL USERINFO_URL CLIENT_ID CLIENT_SECRET" \
        "ldap:HOST BIND_DN BIND_PW"; do
        needs=${id#*:}
        id=${id%%:*}
        missing=""
        any=""
        for v in $needs; do
            v="CONCOURSE_${id^^}_$v"
            if [ -n "${!v:-}" ]; then any=1; else missing+=" ${v#CONCOURSE_${id^^}_}"; fi
        done
        if [ -n "$missing" ]; then
            if [ -n "$any" ]; then record "connector skipped" "$id: missing$missing"; fi
            continue
        fi
        if [ "$id" = ldap ]; then
            [ -n "${CONCOURSE_LDAP_USER_SEARCH_BASE_DN:-}" ] ||
                refuse "server: Failed to open connector ldap: ldap: missing required field \"userSearch.baseDN\""
            [ -n "${CONCOURSE_LDAP_USER_SEARCH_USERNAME:-}" ] ||
                refuse "server: Failed to open connector ldap: ldap: missing required field \"userSearch.username\""
        fi
        enabled+="${enabled:+,}$id"
    done
    [ -n "$enabled" ] || refuse "server: no connectors specified"
    record "connectors" "$enabled"
}

# ----- the database (the played PostgreSQL: CONCOURSE_POSTGRES_HOST is a directory, the
# way libpq and pgx read a host starting with `/` as a Unix socket directory) -----

DB_ERROR=""
DB_FILE=""

# db_connect: sets DB_FILE, or DB_ERROR and fails; an IP host is a database this fake cannot
# reach (nothing plays it), like a real server that is not there.
db_connect() {
    local host="${CONCOURSE_POSTGRES_HOST:-127.0.0.1}" port="${CONCOURSE_POSTGRES_PORT:-5432}"
    local db="${CONCOURSE_POSTGRES_DATABASE:-atc}" user="${CONCOURSE_POSTGRES_USER:-}"
    case "$host" in
        /*)
            if [ -e "$host/.s.PGSQL.$port" ]; then
                DB_FILE="$host/fake-concourse-db.$db"
                # world-writable: web runs as its own user, `migrate` as root
                (umask 000 && : >>"$DB_FILE" && : >>"$DB_FILE.lock") 2>/dev/null
                return 0
            fi
            DB_ERROR="failed to connect to \`user=$user database=$db\`: $host/.s.PGSQL.$port (/tmp): dial error: dial unix $host/.s.PGSQL.$port: connect: no such file or directory"
            ;;
        *)
            DB_ERROR="failed to connect to \`user=$user database=$db\`: $host:$port ($host): dial error: dial tcp $host:$port: connect: connection refused"
            ;;
    esac
    return 1
}

is_known() {
    local v
    for v in $KNOWN_SCHEMAS; do [ "$v" = "$1" ] && return 0; done
    return 1
}

# db_current: REPLY = the schema version as this binary reads it, like
# migrator.CurrentVersion (atc/db/migration/migration.go): the newest history row; a `down`
# row of a version this binary knows reads as the known version before it. Fails (no
# migrations_history) on a fresh database.
db_current() {
    local line="" last="" v dir k prev=0
    [ -s "$DB_FILE" ] || return 1
    while read -r line; do last=$line; done <"$DB_FILE"
    v=${last%% *}
    dir=${last##* }
    if [ "$dir" = down ] && is_known "$v"; then
        for k in $KNOWN_SCHEMAS; do
            if [ "$k" -lt "$v" ]; then prev=$k; fi
        done
        v=$prev
    fi
    REPLY=$v
}

# db_applied: REPLY = the highest schema version applied (what the database really is).
db_applied() {
    local -A applied=()
    local v dir top=0
    if [ -s "$DB_FILE" ]; then
        while read -r v dir; do
            if [ "$dir" = up ]; then applied[$v]=1; else unset "applied[$v]"; fi
        done <"$DB_FILE"
    fi
    for v in "${!applied[@]}"; do
        if [ "$v" -gt "$top" ]; then top=$v; fi
    done
    REPLY=$top
}

# db_migrate TO: migrator.Migrate: up through every known version in (current, TO], or down
# through every known version in (TO, current], newest first. Versions this binary does not
# know are left as they are. Holds the migration lock (waits, no timeout).
db_migrate() {
    local to=$1 cur v list=""
    exec 8>>"$DB_FILE.lock"
    flock 8
    db_current || REPLY=0
    cur=$REPLY
    if [ "$cur" -le "$to" ]; then
        for v in $KNOWN_SCHEMAS; do
            if [ "$v" -gt "$cur" ] && [ "$v" -le "$to" ]; then printf '%s up\n' "$v" >>"$DB_FILE"; fi
        done
    else
        for v in $KNOWN_SCHEMAS; do list="$v $list"; done
        for v in $list; do
            if [ "$v" -le "$cur" ] && [ "$v" -gt "$to" ]; then printf '%s down\n' "$v" >>"$DB_FILE"; fi
        done
    fi
    flock -u 8
    exec 8>&-
    db_applied
    record "migrated" "from $cur to $to (schema $REPLY)"
}

# `concourse migrate` (atc/atccmd/command.go, Migration.Execute).
run_migrate() {
    local latest="" current="" supported="" to="${CONCOURSE_MIGRATE_DB_TO_VERSION:-0}" a
    shift
    while [ $# -gt 0 ]; do
        a=$1
        case "$a" in
            --migrate-to-latest-version) latest=1 ;;
            --current-db-version) current=1 ;;
            --supported-db-version) supported=1 ;;
            --migrate-db-to-version=*) to=${a#*=} ;;
            --migrate-db-to-version) to=${2:-}; shift ;;
            --postgres-* | --encryption-key=* | --old-encryption-key=*) ;;
            *)
                record "migrate-failed" "unknown flag $a"
                echo "error: unknown flag \`${a#--}'" >&2
                exit 1
                ;;
        esac
        shift
    done
    case "$to" in '' | *[!0-9]*)
        record "migrate-failed" "bad version $to"
        echo "error: invalid argument for flag \`--migrate-db-to-version' (expected int): strconv.ParseInt: parsing \"$to\": invalid syntax" >&2
        exit 1
        ;;
    esac
    if [ -n "$supported" ] && [ -z "$latest$current" ]; then
        # needs no database: the version comes from the embedded migrations
        record "migrate" "supported-db-version"
        printf '%s\n' "$SCHEMA"
        exit 0
    fi
    if [ -z "$latest$current$supported" ] && [ "$to" -le 0 ]; then
        record "migrate-failed" "no action"
        echo "error: must specify one of \`--migrate-to-latest-version\`, \`--current-db-version\`, \`--supported-db-version\`, \`--migrate-db-to-version\`, or \`--old-encryption-key\`" >&2
        exit 1
    fi
    if ! db_connect; then
        record "migrate-failed" "$DB_ERROR"
        echo "error: $DB_ERROR" >&2
        exit 1
    fi
    if [ -n "$latest" ]; then
        record "migrate" "migrate-to-latest-version"
        db_migrate "$SCHEMA"
        exit 0
    fi
    if [ -n "$current" ]; then
        record "migrate" "current-db-version"
        if ! db_current; then
            echo "error: ERROR: relation \"migrations_history\" does not exist (SQLSTATE 42P01)" >&2
            exit 1
        fi
        printf '%s\n' "$REPLY"
        exit 0
    fi
    record "migrate" "migrate-db-to-version $to"
    db_migrate "$to"
    echo "Successfully migrated to version: $to"
    exit 0
}

# ----- web (cmd/concourse/web.go; atc/atccmd/command.go; tsa/tsacmd/command.go) -----

# The TSA's SSH listener, played by a Perl child on an abstract Unix socket named by the
# TSA's address, port and host key fingerprint. Every unit of every test shares one network
# namespace; the host key (random per deployment) keeps deployments apart, so a worker
# reaches only a TSA whose host key it trusts (where the real one would connect and fail
# the handshake). A worker sends its public key; the TSA answers with its host key's
# fingerprint and "registered" when the key is authorized. SIGHUP re-reads the keys.
TSA_SERVER='
my ($name, $keys, $ready, $fp) = @ARGV; my $ppid = getppid(); my %ok; my $reload = 0;
sub load { %ok = (); open(my $f, "<", $keys) or return;
  while (<$f>) { my @w = split; $ok{"$w[0] $w[1]"} = 1 if @w >= 2 } }
sub autoflush { my $old = select($_[0]); $| = 1; select($old) }
load(); $SIG{HUP} = sub { $reload = 1 }; $SIG{PIPE} = "IGNORE";
my ($srv, $bound); my $addr = pack("S", 1) . "\0$name";
for (1..40) { socket($srv, 1, 1, 0) or die "socket: $!\n";
  if (bind($srv, $addr) && listen($srv, 64)) { $bound = 1; last }
  close $srv; select(undef, undef, undef, 0.05) }
$bound or die "listen tcp 0.0.0.0: bind: address already in use\n";
open(my $r, ">", $ready) or die "cannot write $ready: $!\n"; close $r;
my %conns;
while (1) {
  exit 0 if getppid() != $ppid;
  if ($reload) { $reload = 0; load() }
  my $rin = ""; vec($rin, fileno($srv), 1) = 1; vec($rin, $_, 1) = 1 for keys %conns;
  next if select(my $rout = $rin, undef, undef, 0.2) <= 0;
  my $c; if (vec($rout, fileno($srv), 1) && accept($c, $srv)) { autoflush($c); $conns{fileno($c)} = $c }
  for my $fd (grep { vec($rout, $_, 1) } keys %conns) {
    my $fh = $conns{$fd};
    my $line = <$fh>;
    if (!defined $line) { delete $conns{$fd}; close $fh; next }
    my @w = split " ", $line;
    # a worker that went away before the answer: EPIPE, not the end of the TSA (Go
    # ignores SIGPIPE on sockets)
    if (@w >= 2 && $ok{"$w[0] $w[1]"}) {
      if (!(print $fh "$fp registered\n")) { delete $conns{$fd}; close $fh } }
    else { print $fh "$fp unauthorized\n"; delete $conns{$fd}; close $fh }
  }
}'

web_reload() {
    record "reloaded"
    lager "tsa" "tsa.reloading-config"
    if [ -n "$TSA_PID" ]; then kill -HUP "$TSA_PID" 2>/dev/null; fi
}

graceful_stop() {
    local sig=$1
    if [ -e "$RUN_DIR/ignore-term" ]; then
        record "ignoring SIG$sig"
        return
    fi
    if [ "$SUBCOMMAND" = worker ]; then
        # sigmon hands the signal to every member; they end cleanly: exit 0, not landed.
        # Running containers live on (worker/workercmd: containerd's children).
        record "killed without landing" "SIG$sig"
    else
        record "stopped" "SIG$sig"
    fi
    finish 0
}

run_web() {
    local fp name ready applied
    fp="$(key_fingerprint "${CONCOURSE_TSA_HOST_KEY:-}.pub")"
    if [ -z "$fp" ]; then fp="$(key_fingerprint "${CONCOURSE_TSA_HOST_KEY:-/dev/null}")"; fi
    # The simulator's units share one network namespace, so the TSA "binds" the unit's own
    # address when it has one (CONCOURSE_PEER_ADDRESS, as the charm sets it): several web
    # units each listen, and a worker reaches the one its CONCOURSE_TSA_HOST entry names
    # (or, for a web without a peer address, the one on that port).
    name="fake-concourse-tsa/${CONCOURSE_PEER_ADDRESS:+$CONCOURSE_PEER_ADDRESS:}${CONCOURSE_TSA_BIND_PORT:-2222}/$fp"
    # web may not write $RUN_DIR (it runs as its own user): the handshake lives in /tmp
    ready="${TMPDIR:-/tmp}/fake-concourse-tsa.$$"
    # Phases A-C (flags, shared flags, RunCommand.Runner: DB open and migrations): no
    # handler yet, so SIGHUP, SIGINT and SIGTERM kill web; SIGUSR1/2 are never handled.
    ON_HUP=web_killed_early ON_INT=web_killed_early ON_TERM=web_killed_early
    trap_signals
    [ -d "$RUN_DIR" ] || mkdir -p -- "$RUN_DIR" 2>/dev/null
    { printf '%s\n' "$$" >"$RUN_DIR/web.pid"; } 2>/dev/null
    record "start"
    echo "fake concourse web $FAKE_VERSION running as pid $$"
    lager "atc" "atc.cmd.start"
    if db_connect; then
        db_migrate "$SCHEMA"
        db_applied
        applied=$REPLY
        if [ "$applied" -gt "$SCHEMA" ]; then
            # migrator.Migrate does not refuse a newer schema: web carries on (section 3.2).
            record "web-on-newer-schema" "schema $applied, v$FAKE_VERSION supports $SCHEMA"
        fi
    elif [ -n "$DB_ERROR" ] && [ "${CONCOURSE_POSTGRES_HOST:-}" != "${CONCOURSE_POSTGRES_HOST#/}" ]; then
        record "start-failed" "$DB_ERROR"
        echo "error: failed to connect to database: $DB_ERROR" >&2
        finish 1
    else
        record "database not played" "${CONCOURSE_POSTGRES_HOST:-}"
    fi
    dex_connectors
    control startup-delay 0
    pause "$REPLY"
    lager "atc" "atc.cmd.finish"
    # Phase D (TSACommand.Runner): SIGHUP reloads the worker keys from now on.
    ON_HUP=web_reload ON_INT=graceful_stop ON_TERM=graceful_stop
    rm -f -- "$ready"
    perl -e "$TSA_SERVER" "$name" "${CONCOURSE_TSA_AUTHORIZED_KEYS:-}" "$ready" "$fp" &
    TSA_PID=$!
    while [ ! -e "$ready" ]; do
        if ! kill -0 "$TSA_PID" 2>/dev/null; then
            record "start-failed" "tsa: listen: address already in use"
            echo "error: Exit trace for group:\ntsa exited with error: listen: address already in use" >&2
            finish 1
        fi
        nap 0.02
    done
    rm -f -- "$ready"
    # Phase E: the members run.
    lager "tsa" "tsa.listening"
    lager "atc" "atc.listening"
    record "listening"
    # web's members run in one ifrit group (cmd/concourse/web.go): when one exits, the
    # group stops and web exits 1 with its exit trace.
    while kill -0 "$TSA_PID" 2>/dev/null; do nap 0.1; done
    wait "$TSA_PID" 2>/dev/null
    record "member exited" "tsa: exit status $?"
    echo "error: Exit trace for group:\ntsa exited with error: exit status 1" >&2
    finish 1
}

# ----- worker (worker/workercmd/worker.go, worker/beacon.go, worker/beacon_runner.go,
# worker/signals_unix.go, tsa/client.go) -----

# The worker's side of a registration: connects to the TSA socket, sends its public key and
# prints the answer; then holds the connection until the TSA goes away (exit 4), the
# network is cut (tsa-unreachable appears, exit 5) or the worker is gone.
TSA_CLIENT='
$| = 1;
my ($name, $key, $cut, $trusted) = @ARGV; my $ppid = getppid();
my $c; (socket($c, 1, 1, 0) && connect($c, pack("S", 1) . "\0$name"))
  or do { print "unreachable\n"; exit 2 };
{ my $old = select($c); $| = 1; select($old) }
print $c "$key\n";
my $rin = ""; vec($rin, fileno($c), 1) = 1;
my $ans = select(my $r = $rin, undef, undef, 10) > 0 ? scalar(<$c>) : undef;
my ($fp, $status) = split " ", ($ans // "");
if (!defined $status) { print "rejected\n"; exit 3 }
if (index($trusted, ",$fp,") < 0) { print "host key mismatch\n"; exit 3 }
if ($status ne "registered") { print "rejected\n"; exit 3 }
print "registered\n";
while (1) {
  exit 0 if getppid() != $ppid;
  exit 5 if -e $cut;
  if (select(my $w = $rin, undef, undef, 0.2) > 0) { my $buf; my $n = sysread($c, $buf, 64); exit 4 if !$n }
}'

# register: one registration attempt (tsa.Client.Register, tsa/client.go tryDialAll): the
# hosts in random order, the first that accepts a connection is the one; true with CONN_PID
# holding the connection and REGISTERED_AT naming the host, false when no host accepts a
# connection or the one that did fails the handshake (an untrusted host key or an
# unauthorized worker key: the SSH handshake's error ends the attempt, no other host is
# tried).
register() {
    local hosts="${CONCOURSE_TSA_HOST:-127.0.0.1:2222}" h answer out name i j t
    local -a order
    read -r -a order <<<"${hosts//,/ }"
    for ((i = ${#order[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        t=${order[i]} order[i]=${order[j]} order[j]=$t
    done
    out=$CONN_OUT
    for h in "${order[@]}"; do
        if [ -e "$RUN_DIR/tsa-unreachable" ]; then return 1; fi
        # emptied here, not removed (no process): the child's redirection truncates it
        # too, but only once it runs, and the loop below may read before that
        { : >"$out"; } 2>/dev/null
        tsa_socket "$h"
        name=$REPLY
        perl -e "$TSA_CLIENT" "$name" "$WORKER_KEY" \
            "$RUN_DIR/tsa-unreachable" "$TRUSTED_FPS" >"$out" 2>/dev/null &
        CONN_PID=$!
        answer=""
        while [ -z "$answer" ] && kill -0 "$CONN_PID" 2>/dev/null; do
            nap 0.02
            read -r answer <"$out" 2>/dev/null || answer=""
        done
        if [ -z "$answer" ]; then read -r answer <"$out" 2>/dev/null || answer=""; fi
        if [ "$answer" = registered ]; then
            REGISTERED_AT=$h
            return 0
        fi
        kill "$CONN_PID" 2>/dev/null
        wait "$CONN_PID" 2>/dev/null
        CONN_PID=""
        if [ "$answer" != unreachable ]; then
            HANDSHAKE_ERROR="$h: $answer"
            return 1
        fi
    done
    HANDSHAKE_ERROR=""
    return 1
}

# tsa_socket HOST:PORT: REPLY = the socket of the TSA at that address presenting a host key
# this worker trusts (or, for a web without a peer address, the one on that port); a name
# nobody listens on when there is none (the connection is refused).
tsa_socket() {
    local h=$1 fp name
    local -a fps
    IFS=',' read -r -a fps <<<"${TRUSTED_FPS#,}"
    for fp in "${fps[@]}"; do
        [ -n "$fp" ] || continue
        for name in "fake-concourse-tsa/$h/$fp" "fake-concourse-tsa/${h##*:}/$fp"; do
            if grep -q "@$name\$" /proc/net/unix 2>/dev/null; then
                REPLY=$name
                return
            fi
        done
    done
    REPLY="fake-concourse-tsa/$h/none"
}

start_containers() {
    local n i
    [ -n "$CONTAINERS_STARTED" ] && return 0
    control containers 0
    n=$REPLY
    case "$n" in '' | *[!0-9]*) n=0 ;; esac
    # how many were started: a worker without any skips pkill's scan of every process
    CONTAINERS_STARTED=$n
    for ((i = 0; i < n; i++)); do
        (exec -a fake-build-container sleep 2147483647) &
        record "container" "running" "$!"
    done
}

stop_containers() {
    if [ "${CONTAINERS_STARTED:-0}" -gt 0 ]; then
        pkill -f -P "$$" '^fake-build-container' 2>/dev/null
    fi
}

# drain: the beacon acts on a drain signal (Beacon.Run): land-worker or retire-worker over a
# new SSH connection (tsa/client.go Land and Retire: dial, tryDialAll over every host, so a
# registration whose TSA just went away does not matter while another answers); when no TSA
# answers, the worker exits 1 (NewBeaconRunner's restarter: ErrAllGatewaysUnreachable while
# drained). Otherwise the ATC lands or retires the worker once its builds are done and the
# registration ends: exit 0.
drain() {
    local how=$DRAIN
    if [ "$how" = land ]; then lager "worker" "worker.beacon-runner.beacon.drain.landing-worker"; else lager "worker" "worker.beacon-runner.beacon.drain.retiring-worker"; fi
    if [ -e "$RUN_DIR/tsa-unreachable" ]; then land_failed; fi
    if ! kill -0 "$CONN_PID" 2>/dev/null && ! register; then land_failed; fi
    if [ "$how" = land ]; then record "landing"; else record "retiring"; fi
    control land-delay 0
    pause "$REPLY"
    stop_containers
    if [ "$how" = land ]; then record "landed"; else record "retired"; fi
    lager "worker" "worker.beacon-runner.beacon.exited"
    finish 0
}

land_failed() {
    record "drain failed" "$DRAIN: all worker SSH gateways unreachable"
    lager "worker" "worker.beacon-runner.beacon.drain.failed-to-$DRAIN-worker" error
    lager "worker" "worker.beacon-runner.exiting"
    echo "error: Exit trace for group:\nbeacon exited with error: all worker SSH gateways unreachable" >&2
    finish 1
}

on_drain_signal() {
    local how=land
    if [ "$1" = USR2 ]; then how=retire; fi
    if [ -z "$DRAIN" ]; then DRAIN=$how; fi
    record "drain requested" "$how"
}

beacon() {
    local retry
    control beacon-retry 5
    retry=$REPLY
    while :; do
        if register; then
            lager "worker" "worker.beacon-runner.beacon.registered"
            record "registered" "$REGISTERED_AT"
            start_containers
            while [ -z "$DRAIN" ] && kill -0 "$CONN_PID" 2>/dev/null; do nap 0.1; done
            if [ -n "$DRAIN" ]; then drain; fi
            CONN_PID=""
            record "registration lost"
        else
            lager "worker" "worker.beacon-runner.beacon.dial.failed-to-connect-to-tsa" error
            record "tsa unreachable" "$HANDSHAKE_ERROR"
            # A buffered drain signal meets the failed attempt: the land or retire cannot
            # reach a TSA either.
            if [ -n "$DRAIN" ]; then land_failed; fi
        fi
        lager "worker" "worker.beacon-runner.beacon.exited-with-error" error
        lager "worker" "worker.beacon-runner.failed" error
        pause "$retry"
        lager "worker" "worker.beacon-runner.restarting"
    done
}

run_worker() {
    # checkHostKey (tsa/client.go): any of the keys in the file
    TRUSTED_FPS=","
    local line
    while read -r line; do
        [ -n "$line" ] && TRUSTED_FPS+="$(printf '%s\n' "$line" | key_fingerprint /dev/stdin),"
    done <"${CONCOURSE_TSA_PUBLIC_KEY:-/dev/null}" 2>/dev/null
    WORKER_KEY="$({ cut -d' ' -f1,2 <"${CONCOURSE_TSA_WORKER_PRIVATE_KEY:-}.pub"; } 2>/dev/null)"
    # Runner(): no handler yet. SIGUSR1/2 are caught by the Go runtime and dropped (lost);
    # SIGHUP, SIGINT and SIGTERM kill the process.
    ON_USR1=signal_lost ON_USR2=signal_lost
    ON_HUP=worker_killed ON_INT=worker_killed ON_TERM=worker_killed
    trap_signals
    [ -d "$RUN_DIR" ] || mkdir -p -- "$RUN_DIR" 2>/dev/null
    { printf '%s\n' "$$" >"$RUN_DIR/worker.pid"; } 2>/dev/null
    record "start"
    echo "fake concourse worker $FAKE_VERSION running as pid $$"
    control startup-delay 0
    pause "$REPLY"
    # NewBeaconRunner: USR1/USR2 are buffered for the beacon from here; sigmon: SIGINT and
    # SIGTERM stop the members cleanly. SIGHUP still kills.
    ON_USR1=on_drain_signal ON_USR2=on_drain_signal
    ON_INT=graceful_stop ON_TERM=graceful_stop
    beacon
}

case "$SUBCOMMAND" in
    web | worker)
        if [ "$SUBCOMMAND" = worker ] && [ "$EUID" -ne 0 ]; then
            record "start-failed" "worker must be run as root"
            echo "worker must be run as root" >&2
            exit 1
        fi
        strict_start "$SUBCOMMAND"
        if [ "$SUBCOMMAND" = web ]; then run_web; else run_worker; fi
        ;;
    migrate)
        run_migrate "$@"
        ;;
esac
