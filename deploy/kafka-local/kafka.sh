#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker + controller) on 127.0.0.1, from the Apache
# jars that Maven resolves from pom.xml beside this script. No Docker needed.
#
#   kafka.sh start            start (or find running) and wait until it answers metadata requests
#   kafka.sh stop [--keep-data]   stop it; its data is discarded unless --keep-data
#   kafka.sh restart          stop --keep-data, then start: topics and offsets survive
#   kafka.sh status           exit 0 and print the bootstrap address when it runs, 3 when not
#   kafka.sh logs [-f]        the broker's log (the last $KAFKA_LOG_LINES lines, or follow)
#   kafka.sh version          the Kafka version (from pom.xml, the one place it is stated)
#   kafka.sh scram-password USER PASSWORD
#                             set a SCRAM-SHA-512 user's password on the running broker
#                             (through its PLAINTEXT super user), as a rotation does
#
# Environment:
#   KAFKA_PORT              client port (PLAINTEXT), default 9092
#   KAFKA_CONTROLLER_PORT   KRaft controller port, default KAFKA_PORT + 1
#   KAFKA_STATE_DIR         config, data, pid and log; default ${TMPDIR:-/tmp}/basicsync-kafka-<port>
#   KAFKA_HEAP_OPTS         JVM heap, default -Xms256m -Xmx512m
#   KAFKA_START_TIMEOUT     seconds to wait for the broker to answer, default 60
#   BASICSYNC_CACHE_DIR     jar cache root, default ${XDG_CACHE_HOME:-~/.cache}/basicsync
#   JAVA_HOME               the Java 17+ to use (else java on PATH)
#
# Secure listeners (off unless KAFKA_SECURE_DIR is set; the plain start above is unchanged):
#   KAFKA_SECURE_DIR        a directory with ca.crt (PEM CA), broker.pem (the broker's PKCS#8
#                           key and certificate chain, PEM, with SAN IP 127.0.0.1) and
#                           scram-users (one "name password" a line). The broker then also
#                           listens with SASL_SSL (SCRAM-SHA-512 users from scram-users, created
#                           when the storage is formatted) and SSL with required client
#                           certificates (principal User:<CN>); the StandardAuthorizer is on
#                           with allow.everyone.if.no.acl.found=false, and the PLAINTEXT and
#                           controller principal (User:ANONYMOUS) is the super user, for setup.
#                           Nothing here makes these files: the security tests do, per session
#                           (tests/fixtures/secure_kafka.py).
#   KAFKA_SASL_SSL_PORT     SASL_SSL port, default KAFKA_PORT + 2
#   KAFKA_SSL_PORT          SSL (mutual TLS) port, default KAFKA_PORT + 3
#
# Installs nothing: when Java 17+ or Maven (needed only to fill the cache) is missing it says
# how to get them and exits 2.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
STATE_DIR="${KAFKA_STATE_DIR:-${TMPDIR:-/tmp}/basicsync-kafka-$PORT}"
DATA_DIR="$STATE_DIR/data"
CONFIG="$STATE_DIR/server.properties"
PID_FILE="$STATE_DIR/kafka.pid"
LOG_FILE="$STATE_DIR/broker.log"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
BOOTSTRAP="127.0.0.1:$PORT"
SECURE_DIR="${KAFKA_SECURE_DIR:-}"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$((PORT + 2))}"
SSL_PORT="${KAFKA_SSL_PORT:-$((PORT + 3))}"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

kafka_version() {
    sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1
}

KAFKA_VERSION="$(kafka_version)"
[[ -n "$KAFKA_VERSION" ]] || die "no <kafka.version> in $POM"
# The cache is keyed by the POM's content too, so a changed dependency list resolves anew.
POM_HASH="$(sha256sum "$POM" | cut -c1-10)"
CACHE_DIR="${BASICSYNC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/basicsync}/kafka-$KAFKA_VERSION-$POM_HASH"
LIBS="$CACHE_DIR/libs"

java_bin() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

require_java() {
    local java version major
    java="$(java_bin)"
    if [[ -z "$java" ]]; then
        say "Java 17 or newer is required and none was found (no JAVA_HOME, no java on PATH)."
        say "Install it, e.g. on Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"
        exit 2
    fi
    version="$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    major="${version%%.*}"
    [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$version")"  # 1.8.0 -> 8
    if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
        say "Java 17 or newer is required; $java is version '${version:-unknown}'."
        say "Install it, e.g. on Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"
        say "and point JAVA_HOME at it if another java comes first on PATH."
        exit 2
    fi
    JAVA="$java"
}

# Resolve the broker's jars into the cache once; later starts need neither Maven nor network.
ensure_jars() {
    [[ -f "$CACHE_DIR/.complete" ]] && return 0
    if ! command -v mvn >/dev/null; then
        say "Maven is required once, to download Kafka $KAFKA_VERSION's jars into $CACHE_DIR."
        say "Install it, e.g. on Debian/Ubuntu: sudo apt-get install maven"
        exit 2
    fi
    mkdir -p "$CACHE_DIR"
    # Two starts at once on a cold cache (the two test workers' brokers) resolve it one at a
    # time, so neither starts on a half-moved copy: the second finds it complete. The lock's
    # file descriptor is the block's only, so the broker started after it does not hold it.
    if command -v flock >/dev/null; then
        {
            flock 9
            resolve_jars
        } 9>"$CACHE_DIR/.lock"
    else
        resolve_jars
    fi
}

resolve_jars() {
    [[ -f "$CACHE_DIR/.complete" ]] && return 0
    say "resolving Kafka $KAFKA_VERSION jars into $LIBS (once) ..."
    local tmp
    tmp="$(mktemp -d "$CACHE_DIR/.libs.XXXXXX")"
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$CACHE_DIR/.mvn.log" 2>&1; then
        cat "$CACHE_DIR/.mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not resolve the Kafka jars (log above)"
    fi
    # Another start may have filled the cache meanwhile (no flock): the first copy wins.
    if [[ -f "$CACHE_DIR/.complete" ]]; then
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    touch "$CACHE_DIR/.complete"
}

# The pid of our broker when it runs (its command line names our config), else nothing.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $CONFIG" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

who_listens() {
    command -v ss >/dev/null || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# Ask the broker for metadata (Metadata v4, no topics) over bash's /dev/tcp, without starting a
# JVM: it is ready when it answers our correlation id with at least one live (unfenced) broker.
answers_metadata() {
    local reply
    reply="$(
        exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        # size 16 | api_key 3, api_version 4, correlation_id 1, client_id "p" | topics [], no auto-create
        printf '\x00\x00\x00\x10\x00\x03\x00\x04\x00\x00\x00\x01\x00\x01p\x00\x00\x00\x00\x00' >&3
        # size, correlation_id, throttle_time_ms, broker count
        timeout 5 head -c 16 <&3 | od -An -tx1 | tr -d ' \n'
    )" || return 1
    [[ "$reply" =~ ^[0-9a-f]{8}00000001[0-9a-f]{8}([0-9a-f]{8})$ ]] || return 1
    ((16#${BASH_REMATCH[1]} > 0))
}

write_config() {
    mkdir -p "$STATE_DIR"
    local listeners="" protocols=""
    if [[ -n "$SECURE_DIR" ]]; then
        listeners=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$SSL_PORT"
        protocols=",SASL_SSL:SASL_SSL,SSL:SSL"
    fi
    sed -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
        -e "s#@DATA_DIR@#$DATA_DIR#g" -e "s#@SECURE_LISTENERS@#$listeners#g" \
        -e "s#@SECURE_PROTOCOLS@#$protocols#g" "$HERE/server.properties.template" >"$CONFIG"
    if [[ -n "$SECURE_DIR" ]]; then
        sed -e "s#@SECURE_DIR@#$SECURE_DIR#g" "$HERE/secure.properties.template" >>"$CONFIG"
    fi
}

# The secure listeners' files must exist before the broker (or the formatter) reads them.
check_secure_dir() {
    [[ -n "$SECURE_DIR" ]] || return 0
    [[ "$SECURE_DIR" == /* ]] || die "KAFKA_SECURE_DIR must be an absolute path: $SECURE_DIR"
    local file
    for file in ca.crt broker.pem scram-users; do
        [[ -r "$SECURE_DIR/$file" ]] || die "KAFKA_SECURE_DIR has no readable $file ($SECURE_DIR)"
    done
}

# --add-scram options for the formatter, one per "name password" line of scram-users.
scram_options() {
    [[ -n "$SECURE_DIR" ]] || return 0
    local name password
    while read -r name password; do
        [[ -n "$name" && "$name" != \#* ]] || continue
        printf '%s\0%s\0' --add-scram "SCRAM-SHA-512=[name=$name,password=$password]"
    done <"$SECURE_DIR/scram-users"
}

format_storage() {
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    local cluster_id scram=()
    # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding. One in 64
    # starts with "-": given as "--cluster-id ID" the tool took it for an option and refused.
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    mapfile -d '' scram < <(scram_options)
    # A short-lived JVM: skip the optimising compiler, start faster.
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$HERE/log4j2.properties" kafka.tools.StorageTool format --ignore-formatted \
        --cluster-id="$cluster_id" --config "$CONFIG" "${scram[@]}" >>"$LOG_FILE" 2>&1 ||
        die "formatting $DATA_DIR failed; see $LOG_FILE"
}

wait_until_ready() {
    local pid="$1" started="$2" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "the broker exited during start (log above, all of it in $LOG_FILE)"
        fi
        if answers_metadata; then
            say "Kafka $KAFKA_VERSION is up at $BOOTSTRAP (pid $pid, $((SECONDS - started)) s)"
            return 0
        fi
        sleep 0.2
    done
    tail -n 40 "$LOG_FILE" >&2 || true
    die "the broker did not answer a metadata request within ${START_TIMEOUT} s (pid $pid; $LOG_FILE)"
}

cmd_start() {
    require_java
    local pid started=$SECONDS
    if pid="$(running_pid)"; then
        check_secure_dir
        ensure_jars
        write_config
        say "already running (pid $pid)"
        wait_until_ready "$pid" "$started"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PID_FILE"
    check_secure_dir
    local port ports=("$PORT" "$CONTROLLER_PORT")
    [[ -n "$SECURE_DIR" ]] && ports+=("$SASL_SSL_PORT" "$SSL_PORT")
    for port in "${ports[@]}"; do
        if port_open "$port"; then
            say "port $port on 127.0.0.1 is taken by another process:"
            who_listens "$port"
            die "refusing to start; stop that process or choose another KAFKA_PORT (and KAFKA_CONTROLLER_PORT, KAFKA_SASL_SSL_PORT, KAFKA_SSL_PORT)"
        fi
    done
    ensure_jars
    write_config
    # One log per broker process; the previous one stays as broker.log.1.
    if [[ -f "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.1"; fi
    format_storage
    # setsid: the broker outlives the shell that started it and ignores its terminal's signals;
    # no inherited stdin/stdout, so callers that capture this script's output do not hang.
    (
        cd "$STATE_DIR"
        # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM options
        exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
            "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -Djava.awt.headless=true -Dkafka.logs.dir="$STATE_DIR" \
            -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
            -cp "$LIBS/*" kafka.Kafka "$CONFIG"
    ) </dev/null >>"$LOG_FILE" 2>&1 &
    local waited=0
    until [[ -s "$PID_FILE" ]]; do
        ((waited++ < 100)) || die "the broker process did not start; see $LOG_FILE"
        sleep 0.05
    done
    pid="$(cat "$PID_FILE")"
    wait_until_ready "$pid" "$started"
    echo "$BOOTSTRAP"
}

cmd_stop() {
    local keep_data=false pid
    [[ "${1:-}" == "--keep-data" ]] && keep_data=true
    if pid="$(running_pid)"; then
        say "stopping the broker (pid $pid) ..."
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "no clean shutdown within 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
        say "stopped"
    else
        say "not running"
    fi
    rm -f "$PID_FILE"
    # The data directory holds Kafka's .lock files; without --keep-data the next start is a new,
    # empty cluster. The broker log stays for a post-mortem.
    if ! $keep_data; then rm -rf "$DATA_DIR"; fi
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running: Kafka $KAFKA_VERSION at $BOOTSTRAP (pid $pid, state in $STATE_DIR)"
        return 0
    fi
    echo "stopped (port $PORT, state in $STATE_DIR)"
    return 3
}

cmd_scram_password() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh scram-password USER PASSWORD"
    [[ -n "$(running_pid)" ]] || die "no broker runs on $BOOTSTRAP"
    ensure_jars
    require_java
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$HERE/log4j2.properties" kafka.admin.ConfigCommand \
        --bootstrap-server "$BOOTSTRAP" --alter --entity-type users --entity-name "$1" \
        --add-config "SCRAM-SHA-512=[password=$2]" >>"$LOG_FILE" 2>&1 ||
        die "setting $1's SCRAM password failed; see $LOG_FILE"
}

cmd_logs() {
    [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
    if [[ "${1:-}" == "-f" ]]; then
        exec tail -n "${KAFKA_LOG_LINES:-100}" -F "$LOG_FILE"
    fi
    tail -n "${KAFKA_LOG_LINES:-100}" "$LOG_FILE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
restart)
    cmd_stop --keep-data
    cmd_start
    ;;
status) cmd_status ;;
logs) cmd_logs "${2:-}" ;;
version) echo "$KAFKA_VERSION" ;;
scram-password) cmd_scram_password "${@:2}" ;;
*)
    sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//p;}' "$0" >&2
    exit 64
    ;;
esac
