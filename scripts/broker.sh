#!/usr/bin/env bash
# Installs (if missing) and runs one message broker in the foreground, on
# 127.0.0.1, with its data kept on disk: for host-bridge's users, who point
# daprd at it with components/NAME, and for the tests, which start several.
#
#   scripts/broker.sh NAME                 run NAME (installing it first if missing)
#   scripts/broker.sh --install NAME...    only install (also: install NAME..., NAME all)
#
# NAME       port   what runs                                   from
# redis      6379   redis-server, AOF with fsync on every write  Debian redis-server
# kafka      9092   Kafka 4.1.1, KRaft (broker+controller)       Maven Central, run on Java 17
# rabbitmq   5672   a RabbitMQ node of its own                   Debian rabbitmq-server
# jetstream  4222   nats-server -js, with one stream HOST_BRIDGE Debian nats-server
#                   covering every one-token subject (below)
# mqtt       1883   mosquitto, with persistence                  Debian mosquitto
#
# When the broker serves (its protocol answers, and for jetstream the stream
# exists), one line goes to stdout:  broker.sh: NAME ready on 127.0.0.1:PORT
# Progress lines before it start with "broker.sh: " too. The broker's own log
# is a file in its data folder; the tail of it is printed if the broker stops
# on its own or never gets ready.
#
# Environment:
#   BROKER_DATA_DIR  the data folder (default
#                    ${XDG_DATA_HOME:-$HOME/.local/share}/host-bridge/brokers/NAME)
#   BROKER_PORT      the client port (default above)
#   BROKER_PORT2     kafka: the KRaft controller port (default BROKER_PORT+1);
#                    rabbitmq: the Erlang distribution port (default
#                    BROKER_PORT+20000, RabbitMQ's own rule)
#   BROKER_READY_TIMEOUT  seconds to wait for the broker to serve (300)
#   BROKER_STOP_TIMEOUT   seconds to wait for it to stop after SIGTERM (60)
#
# Stopping: SIGTERM or SIGINT (Ctrl-C) is passed on to the broker as SIGTERM,
# which shuts it down cleanly; broker.sh waits for it and exits 0. The broker
# runs with a parent-death signal of SIGKILL (setpriv --pdeathsig), so if
# broker.sh itself is killed with SIGKILL the broker dies with it at once,
# as in a crash: no broker is left behind, and its data is what a crash
# leaves (which is what the tests that kill -9 it want to see).
#
# What survives a kill -9 of the broker, by broker:
#   redis      every write acknowledged: appendonly yes, appendfsync always.
#   kafka      every record acknowledged: it is written to the log segment
#              (the page cache) before the ack; Kafka fsyncs later, so an OS
#              crash or power loss can lose the last records, a process kill not.
#   rabbitmq   durable queues and persistent messages; a publisher confirm
#              comes after the message is on disk.
#   jetstream  nats-server 2.9.10 writes each message to its block file before
#              it answers the publish (the page cache, so a process kill loses
#              nothing) and fsyncs every 2 minutes: an OS crash can lose up to
#              that. 2.9.10 has no setting to change it.
#   mqtt       mosquitto 2.0.11 keeps everything in memory and writes a whole
#              snapshot (mosquitto.db, fsynced, renamed into place) only at
#              autosave time and at a clean stop. With autosave_on_changes
#              true and autosave_interval 1 (set here) it writes one at the end
#              of each pass of its event loop in which something counted as a
#              change: a message queued for an offline session, a delivery
#              acked by a subscriber, a connect, subscribe or unsubscribe. The
#              PUBACK to the publisher goes out earlier in that same pass, and
#              a message handed straight to a connected subscriber (in flight,
#              not queued) counts as no change, so a kill -9 can still lose
#              messages whose PUBACK the publisher already has (seen here:
#              1 of 200 queued messages, killed right after the last PUBACK).
#
# JetStream subjects: the stream covers "*", every one-token subject (a topic
# without a dot: orders, deadletters, ...). nats-server 2.9.10 accepts ">",
# "*.>" and "*.*" too, but each of those also matches _INBOX.<id>, the deliver
# subject Dapr's jetstream component gives its consumers, and creating such
# a consumer then fails ("consumer deliver subject forms a cycle"); ">" and
# "*.>" also capture $JS.API requests: the stream stores them and answers
# with a PubAck in place of the API's reply. A topic with dots needs its own subjects: BROKER_JETSTREAM_SUBJECTS
# (space-separated, default "*") replaces the list, e.g. "* orders.>".
#
# RabbitMQ shares epmd, Erlang's port mapper on 4369, with every Erlang node
# of the machine. If none is running, broker.sh starts one (bound to
# 127.0.0.1) and records that it did; when a rabbitmq broker.sh stops and no
# other one is running, it stops that epmd again ("epmd -kill", which epmd
# refuses while any node is still registered). An epmd broker.sh did not
# start is never stopped. After a kill -9 of broker.sh, the epmd it started
# stays until the next rabbitmq broker.sh stops.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUPPORT=$SCRIPTS/broker
TOOLS=$HOME/.cache/host-bridge/tools
KAFKA_VERSION=4.1.1
KAFKA_HOME=$TOOLS/kafka-$KAFKA_VERSION
BROKERS="redis kafka rabbitmq jetstream mqtt"

say() { printf 'broker.sh: %s\n' "$*" 2>/dev/null || true; }
warn() { printf 'broker.sh: %s\n' "$*" >&2 2>/dev/null || true; }
die() {
    warn "$*"
    exit 1
}
usage() {
    cat >&2 <<EOF
usage: scripts/broker.sh NAME              run NAME in the foreground (installs it if missing)
       scripts/broker.sh --install NAME... install only (NAME may be "all")
NAME: $BROKERS
EOF
    exit 2
}

# A reader of our stdout may be gone once it saw the ready line: a write then
# fails instead of killing broker.sh before it has stopped the broker.
trap '' PIPE

SUDO=()
if [ "$(id -u)" != 0 ]; then
    SUDO=(sudo)
fi

# A scratch folder, made on first use (most runs need none), removed at exit.
TMP=
scratch() {
    [ -n "$TMP" ] || TMP=$(mktemp -d "${TMPDIR:-/tmp}/broker.sh.XXXXXX")
}
BROKER_PID=
EXIT_HOOKS=()
on_exit() {
    local hook
    # An error of this script's own while the broker runs stops it cleanly.
    if [ -n "$BROKER_PID" ]; then
        stop_broker || true
    fi
    for hook in "${EXIT_HOOKS[@]+"${EXIT_HOOKS[@]}"}"; do
        "$hook" || true
    done
    if [ -n "$TMP" ]; then rm -rf "$TMP"; fi
}
trap on_exit EXIT

PYTHON=python3
if [ -x /usr/bin/python3 ]; then
    PYTHON=/usr/bin/python3
fi

# ---------------------------------------------------------------------------
# Installing
# ---------------------------------------------------------------------------

# Installs by concurrent broker.sh runs (two tests on a fresh machine) take
# turns; each checks again once it holds the lock.
take_install_lock() {
    mkdir -p "$TOOLS"
    exec {INSTALL_LOCK}>"$TOOLS/.broker-install.lock"
    if ! flock -n "$INSTALL_LOCK"; then
        say "waiting for another broker.sh to finish installing"
        flock "$INSTALL_LOCK"
    fi
}
release_install_lock() {
    exec {INSTALL_LOCK}>&-
}

# apt-get, waiting for the dpkg lock while another install holds it.
apt_get() {
    scratch
    local log=$TMP/apt.log try
    for try in $(seq 1 60); do
        if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1; then
            return 0
        fi
        if grep -qE 'Could not get lock|Unable to (acquire|lock)|is another process using it' "$log"; then
            [ "$try" = 1 ] && say "apt is busy with another install; waiting for it"
            sleep 5
            continue
        fi
        cat "$log" >&2
        return 1
    done
    cat "$log" >&2
    return 1
}

# Installs a Debian package whose own service must not start: broker.sh runs
# the broker itself, on its own ports and data. policy-rc.d answering 101
# ("action not allowed") keeps invoke-rc.d and deb-systemd-invoke from
# starting it; only a policy-rc.d created here is removed afterwards.
install_debian_package() {
    local package=$1 service=$2 start=$SECONDS
    if ! apt-cache policy "$package" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update (no candidate for $package yet)"
        apt_get update || die "apt-get update failed"
    fi
    say "installing $package (Debian package, with its service kept from starting)"
    local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 0755 "$policy"
        created_policy=1
    fi
    apt_get install -y -q --no-install-recommends "$package" || rc=$?
    if [ "$created_policy" = 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
    fi
    [ "$rc" = 0 ] || die "apt-get install $package failed (status $rc)"
    stop_system_service "$service"
    say "installed $package $(dpkg-query -W -f='${Version}' "$package") in $((SECONDS - start)) s"
}

# Under systemd, a unit may have been started anyway (or will be at the next
# boot): stop and disable the one this install brought, which would hold the
# broker's port.
stop_system_service() {
    local unit=$1
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            "${SUDO[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
            say "stopped and disabled the system's $unit service (broker.sh runs its own broker)"
        fi
    elif [ -x "/etc/init.d/$unit" ] && "/etc/init.d/$unit" status >/dev/null 2>&1; then
        "${SUDO[@]}" "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
        say "stopped the system's $unit service (broker.sh runs its own broker)"
    fi
}

# The program a broker runs, by NAME: Debian package, binary, service.
debian_package() {
    case $1 in
    redis) echo "redis-server /usr/bin/redis-server redis-server" ;;
    rabbitmq) echo "rabbitmq-server /usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server" ;;
    jetstream) echo "nats-server /usr/sbin/nats-server nats-server" ;;
    mqtt) echo "mosquitto /usr/sbin/mosquitto mosquitto" ;;
    esac
}

# The binary of a Debian-packaged broker, found where the package puts it or
# on PATH (a redis-server installed some other way will do).
broker_binary() {
    local package binary service
    read -r package binary service <<<"$(debian_package "$1")"
    if [ -x "$binary" ]; then
        echo "$binary"
    elif [ "$1" != rabbitmq ] && command -v "$(basename "$binary")" >/dev/null 2>&1; then
        command -v "$(basename "$binary")"
    fi
}

install_debian_broker() {
    local name=$1 package binary service
    read -r package binary service <<<"$(debian_package "$name")"
    if [ -n "$(broker_binary "$name")" ]; then
        say "$name: $package already installed"
        return
    fi
    take_install_lock
    if [ -z "$(broker_binary "$name")" ]; then
        local epmd_before=0
        if [ "$name" = rabbitmq ] && epmd_running; then epmd_before=1; fi
        install_debian_package "$package" "$service"
        # Installing rabbitmq-server leaves an epmd running (as the rabbitmq
        # user, on every interface) even with its service kept from starting.
        if [ "$name" = rabbitmq ] && [ "$epmd_before" = 0 ] && epmd_running; then
            if epmd -kill >/dev/null 2>&1; then
                say "stopped the epmd the rabbitmq-server install left running"
            fi
        fi
    fi
    release_install_lock
    [ -n "$(broker_binary "$name")" ] || die "$package is installed but $binary is missing"
}

java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1
}

# Kafka has no Debian package: its jars come from Maven Central, resolved by
# Maven from scripts/broker/pom.xml. Redone when the pom changes.
kafka_installed() {
    [ -f "$KAFKA_HOME/installed-from" ] &&
        sha256sum <"$SUPPORT/pom.xml" | cmp -s - "$KAFKA_HOME/installed-from"
}

install_kafka() {
    if kafka_installed; then
        say "kafka: Kafka $KAFKA_VERSION already installed in $KAFKA_HOME"
        return
    fi
    take_install_lock
    if kafka_installed; then
        release_install_lock
        return
    fi
    local start=$SECONDS
    if [ "$(java_major)" = "" ] || [ "$(java_major)" -lt 17 ]; then
        install_debian_package openjdk-17-jre-headless openjdk-17-jre-headless
    fi
    if ! command -v mvn >/dev/null 2>&1; then
        install_debian_package maven maven
    fi
    say "installing Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME/libs (mvn dependency:copy-dependencies; about 50 jars, 45 MB)"
    mkdir -p "$KAFKA_HOME"
    rm -rf "$KAFKA_HOME/libs.new"
    # Progress: a line per 100 files Maven downloaded; errors as they come.
    local downloads=0 line
    mvn -B -f "$SUPPORT/pom.xml" dependency:copy-dependencies -Dkafka.libs="$KAFKA_HOME/libs.new" 2>&1 |
        while IFS= read -r line; do
            case $line in
            *"Downloaded from"*)
                downloads=$((downloads + 1))
                if [ $((downloads % 100)) = 0 ]; then say "  downloaded $downloads files"; fi
                ;;
            *ERROR* | *"BUILD FAILURE"*) printf '%s\n' "$line" >&2 ;;
            esac
        done || die "mvn could not fetch Kafka $KAFKA_VERSION (see the errors above)"
    [ -n "$(ls "$KAFKA_HOME/libs.new"/kafka_2.13-*.jar 2>/dev/null)" ] ||
        die "mvn left no kafka_2.13 jar in $KAFKA_HOME/libs.new"
    rm -rf "$KAFKA_HOME/libs"
    mv "$KAFKA_HOME/libs.new" "$KAFKA_HOME/libs"
    sha256sum <"$SUPPORT/pom.xml" >"$KAFKA_HOME/installed-from"
    say "installed Kafka $KAFKA_VERSION: $(find "$KAFKA_HOME/libs" -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_HOME/libs" | cut -f1) in $((SECONDS - start)) s"
    release_install_lock
}

install_broker() {
    case $1 in
    kafka) install_kafka ;;
    redis | rabbitmq | jetstream | mqtt) install_debian_broker "$1" ;;
    *) usage ;;
    esac
}

# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

valid_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "$2 must be a port number (1-65535), not '$1'"
    fi
}

port_open() {
    (: 2>/dev/null </dev/tcp/127.0.0.1/"$1") 2>/dev/null
}

# A port still held by a broker killed a moment ago frees itself; anything
# else holding it is an error that names the port.
wait_port_free() {
    local port=$1 what=$2 i
    for i in $(seq 1 50); do
        port_open "$port" || return 0
        [ "$i" = 1 ] && say "waiting for 127.0.0.1:$port ($what) to be free"
        sleep 0.2
    done
    die "127.0.0.1:$port ($what) is in use by another program; stop it, or choose another port with BROKER_PORT/BROKER_PORT2"
}

# Starts the broker in the background, with its output on our stderr and
# SIGKILL as its parent-death signal. The data folder's lock stays ours only.
PDEATHSIG=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then
    PDEATHSIG=(setpriv --pdeathsig KILL --)
fi
spawn() {
    "${PDEATHSIG[@]}" "$@" >&2 {DATA_LOCK}>&- &
    BROKER_PID=$!
}

# A probe of scripts/broker/ready.py: 0 ready, 1 not yet, 2 never (why on stderr).
probe() {
    local rc=0
    "$PYTHON" "$SUPPORT/ready.py" "$@" || rc=$?
    return "$rc"
}

show_log_tail() {
    local file
    for file in "$@"; do
        if [ -s "$file" ]; then
            warn "last lines of $file:"
            tail -n 30 "$file" | sed 's/^/    /' >&2 || true
        fi
    done
}

# Stops the broker with SIGTERM and waits for it; SIGKILL after
# BROKER_STOP_TIMEOUT. Returns non-zero if it had to be killed.
stop_broker() {
    local pid=$BROKER_PID waited=0 limit=$((${BROKER_STOP_TIMEOUT:-60} * 5))
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$limit" ]; then
            warn "$NAME did not stop within ${BROKER_STOP_TIMEOUT:-60} s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            BROKER_PID=
            return 1
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
    BROKER_PID=
}

on_signal() {
    trap '' TERM INT
    say "stopping $NAME"
    if stop_broker; then
        say "$NAME stopped"
        exit 0
    fi
    exit 1
}

# Waits until `probe ARGS...` says ready, printing how long it has waited
# every 10 s; fails if the broker exits or BROKER_READY_TIMEOUT passes.
wait_ready() {
    local start=$SECONDS last=$SECONDS limit=${BROKER_READY_TIMEOUT:-300} rc
    while true; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            rc=0
            wait "$BROKER_PID" || rc=$?
            BROKER_PID=
            show_log_tail "${LOGS[@]}"
            die "$NAME exited (status $rc) before it was ready"
        fi
        rc=0
        probe "$@" || rc=$?
        case $rc in
        0) return 0 ;;
        2)
            stop_broker || true
            die "$NAME started, but could not be made ready (above)"
            ;;
        esac
        if [ $((SECONDS - start)) -ge "$limit" ]; then
            show_log_tail "${LOGS[@]}"
            stop_broker || true
            die "$NAME was not ready within $limit s"
        fi
        if [ $((SECONDS - last)) -ge 10 ]; then
            last=$SECONDS
            say "waiting for $NAME to be ready ($((SECONDS - start)) s)"
        fi
        sleep 0.25
    done
}

# Keeps a log from growing without bound across runs: rolled at 10 MB.
roll_log() {
    local file=$1
    if [ -f "$file" ] && [ "$(stat -c %s "$file")" -gt 10485760 ]; then
        mv -f "$file" "$file.1"
    fi
}

start_redis() {
    LOGS=("$DATA/redis.log")
    roll_log "$DATA/redis.log"
    # Quoted values: the data folder may contain spaces.
    cat >"$DATA/redis.conf" <<EOF
# Written by scripts/broker.sh at each start; edits are lost.
bind 127.0.0.1
port $PORT
dir "$DATA"
logfile "$DATA/redis.log"
daemonize no
# Every acknowledged write survives a kill -9: the AOF is fsynced before the reply.
appendonly yes
appendfsync always
# The AOF is the one copy: no RDB snapshots besides it.
save ""
EOF
    spawn "$(broker_binary redis)" "$DATA/redis.conf"
    wait_ready redis "$PORT"
}

start_jetstream() {
    LOGS=("$DATA/nats-server.log")
    roll_log "$DATA/nats-server.log"
    # -sd: JetStream keeps its streams under $DATA/jetstream.
    spawn "$(broker_binary jetstream)" -a 127.0.0.1 -p "$PORT" -js -sd "$DATA" \
        -l "$DATA/nats-server.log" -P "$DATA/nats-server.pid"
    # Ready once the stream exists: created, or its subjects updated.
    local subjects
    read -r -a subjects <<<"${BROKER_JETSTREAM_SUBJECTS:-*}"
    wait_ready jetstream "$PORT" HOST_BRIDGE "${subjects[@]}"
}

start_mqtt() {
    LOGS=("$DATA/mosquitto.log")
    roll_log "$DATA/mosquitto.log"
    cat >"$DATA/mosquitto.conf" <<EOF
# Written by scripts/broker.sh at each start; edits are lost.
listener $PORT 127.0.0.1
allow_anonymous true
# Run as whoever runs broker.sh (as root, mosquitto would switch to the
# mosquitto user, who cannot write the data folder).
user $(id -un)
log_dest file $DATA/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
set_tcp_nodelay true
# Persistence: a snapshot of everything (sessions, queued and in-flight
# messages, retained messages) in $DATA/mosquitto.db, written after every
# pass of the event loop that changed something (see broker.sh's header for
# what that does and does not cover).
persistence true
persistence_location $DATA/
persistence_file mosquitto.db
autosave_on_changes true
autosave_interval 1
# Queue every message for an offline durable session (default: 1000, then drop).
max_queued_messages 0
# No cap on a client's unacked deliveries. Dapr's mqtt3 component never acks
# a message whose delivery failed, and MQTT 3.1.1 sends it again only when
# the client reconnects; with the default cap of 20, twenty such messages
# stop every later delivery to that client until then.
max_inflight_messages 0
EOF
    spawn "$(broker_binary mqtt)" -c "$DATA/mosquitto.conf"
    wait_ready mqtt "$PORT"
}

start_kafka() {
    local controller=${BROKER_PORT2:-$((PORT + 1))}
    valid_port "$controller" BROKER_PORT2
    wait_port_free "$controller" "Kafka's controller port, BROKER_PORT2"
    LOGS=("$DATA/logs/server.log")
    mkdir -p "$DATA/logs"
    cat >"$DATA/server.properties" <<EOF
# Written by scripts/broker.sh at each start; edits are lost.
# One node that is both the KRaft controller and the broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA/kraft-logs
# A topic is shared by the replicas of a consumer group one partition each:
# four lets up to four replicas of an app share a topic.
num.partitions=4
# One broker: every replication factor is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Topics come into being when first used, as with the other brokers.
auto.create.topics.enable=true
# A consumer group's first member gets its partitions at once, not after 3 s.
group.initial.rebalance.delay.ms=0
EOF
    local java=(java -Xmx384m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dkafka.logs.dir="$DATA/logs" -Dlog4j2.configurationFile="$SUPPORT/kafka-log4j2.properties"
        -cp "$KAFKA_HOME/libs/*")
    if [ ! -f "$DATA/kraft-logs/meta.properties" ]; then
        say "formatting Kafka's storage in $DATA/kraft-logs (first start on this data folder)"
        scratch
        local cluster_id
        cluster_id=$("${PDEATHSIG[@]}" "${java[@]}" kafka.tools.StorageTool random-uuid 2>"$TMP/format.log") ||
            { cat "$TMP/format.log" >&2; die "kafka: StorageTool random-uuid failed"; }
        "${PDEATHSIG[@]}" "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$DATA/server.properties" \
            >"$TMP/format.log" 2>&1 ||
            { cat "$TMP/format.log" >&2; die "kafka: formatting $DATA/kraft-logs failed"; }
    fi
    spawn "${java[@]}" kafka.Kafka "$DATA/server.properties"
    wait_ready kafka "$PORT"
}

# --- RabbitMQ and epmd --------------------------------------------------------

EPMD_STATE=$HOME/.cache/host-bridge/epmd

epmd_running() {
    epmd -names >/dev/null 2>&1
}

# Makes sure an epmd runs, starting one if none does, and records this
# broker.sh as one of its users.
epmd_join() {
    mkdir -p "$EPMD_STATE"
    (
        flock 8
        if ! epmd_running; then
            # Not holding our locks, nor our stdout (a reader waits for its end).
            epmd -daemon -address 127.0.0.1 </dev/null >/dev/null 2>&1 8>&- {DATA_LOCK}>&-
            touch "$EPMD_STATE/started-by-broker.sh"
            say "started epmd (Erlang's port mapper, 127.0.0.1:4369); the last rabbitmq broker.sh to stop stops it"
        fi
        echo "$$" >>"$EPMD_STATE/users"
    ) 8>"$EPMD_STATE/lock"
    EXIT_HOOKS+=(epmd_leave)
}

# Stops the epmd a broker.sh started once no live broker.sh uses it.
epmd_leave() {
    (
        flock 8
        local pid live=()
        while read -r pid; do
            if [ "$pid" != "$$" ] && kill -0 "$pid" 2>/dev/null; then live+=("$pid"); fi
        done <"$EPMD_STATE/users"
        printf '%s\n' "${live[@]+"${live[@]}"}" | sed '/^$/d' >"$EPMD_STATE/users"
        if [ "${#live[@]}" = 0 ] && [ -e "$EPMD_STATE/started-by-broker.sh" ]; then
            if epmd -kill >/dev/null 2>&1; then
                rm -f "$EPMD_STATE/started-by-broker.sh"
            fi
        fi
    ) 8>"$EPMD_STATE/lock"
}

start_rabbitmq() {
    local dist=${BROKER_PORT2:-$((PORT + 20000))}
    valid_port "$dist" BROKER_PORT2
    wait_port_free "$dist" "RabbitMQ's Erlang distribution port, BROKER_PORT2"
    # The node's name is its data folder's: Mnesia records it, so a node
    # must keep its name across restarts (on any port), and two data
    # folders never share one.
    local node
    node=host-bridge-$(printf '%s' "$DATA" | sha256sum | cut -c1-10)@localhost
    LOGS=("$DATA/log/$node.log")
    mkdir -p "$DATA/log" "$DATA/mnesia"
    printf '[].\n' >"$DATA/enabled_plugins"
    cat >"$DATA/rabbitmq.conf" <<EOF
# Written by scripts/broker.sh at each start; edits are lost.
# The log is $DATA/log/$node.log only.
log.console = false
# A delivery left unacked this long closes its channel, and RabbitMQ
# requeues what the channel held. Dapr's rabbitmq component (components-contrib
# 1.18.4) cancels its consumer when daprd pauses a subscription (the app
# health check) but keeps the channel, so the messages it had prefetched
# and not yet handed to the app stay unacked: without this, until daprd
# restarts. A guest's delivery is bounded far below a minute.
consumer_timeout = 60000
EOF
    # The Erlang cookie the node and the CLI tools share, created here (once,
    # atomically) so that two nodes starting at once do not race to write it.
    if [ ! -f "$HOME/.erlang.cookie" ]; then
        scratch
        local byte cookie='' letters=ABCDEFGHIJKLMNOPQRSTUVWXYZ
        for byte in $(od -An -N20 -tu1 /dev/urandom); do
            cookie+=${letters:byte % 26:1}
        done
        (
            umask 077
            printf '%s' "$cookie" >"$TMP/cookie"
            chmod 0400 "$TMP/cookie"
            mv -n "$TMP/cookie" "$HOME/.erlang.cookie"
        )
    fi
    epmd_join
    say "rabbitmq node $node (check it: /usr/lib/rabbitmq/bin/rabbitmq-diagnostics -n $node ping; /usr/sbin/rabbitmq-diagnostics runs as the rabbitmq user, with another cookie)"
    # Everything the node writes is in $DATA; /etc/rabbitmq is not read.
    # RUNNING_UNDER_SYSTEMD makes rabbitmq-server exec the Erlang VM instead
    # of running it as a child and turning signals into `rabbitmqctl stop`:
    # the VM then is our child, gets our SIGTERM (a graceful stop) and the
    # parent-death signal. +B i: a Ctrl-C reaching the VM does not halt it;
    # the SIGTERM broker.sh sends stops it cleanly.
    spawn env \
        RABBITMQ_NODENAME="$node" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$PORT" \
        RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_MNESIA_BASE="$DATA/mnesia" \
        RABBITMQ_LOG_BASE="$DATA/log" \
        RABBITMQ_PID_FILE="$DATA/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$DATA/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$DATA/advanced.config" \
        RABBITMQ_CONF_ENV_FILE=/dev/null \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+B i -kernel inet_dist_use_interface {127,0,0,1}" \
        RUNNING_UNDER_SYSTEMD=true \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        "$(broker_binary rabbitmq)"
    wait_ready amqp "$PORT"
}

run_broker() {
    NAME=$1
    local default_port
    case $NAME in
    redis) default_port=6379 ;;
    kafka) default_port=9092 ;;
    rabbitmq) default_port=5672 ;;
    jetstream) default_port=4222 ;;
    mqtt) default_port=1883 ;;
    *) usage ;;
    esac
    PORT=${BROKER_PORT:-$default_port}
    valid_port "$PORT" BROKER_PORT
    install_broker "$NAME"

    DATA=${BROKER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/host-bridge/brokers/$NAME}
    mkdir -p "$DATA" || die "cannot create the data folder $DATA"
    DATA=$(cd "$DATA" && pwd -P)
    # One broker per data folder: a second one would corrupt the first's data.
    exec {DATA_LOCK}>"$DATA/.broker.sh.lock"
    if ! flock -w 10 "$DATA_LOCK"; then
        die "$DATA is in use by another broker.sh"
    fi
    wait_port_free "$PORT" "$NAME's port, BROKER_PORT"

    trap 'on_signal' TERM INT
    local start=$SECONDS
    say "starting $NAME on 127.0.0.1:$PORT with its data in $DATA"
    "start_$NAME"
    say "$NAME ready on 127.0.0.1:$PORT"
    warn "  (started in $((SECONDS - start)) s; its log: ${LOGS[0]}; stop it with Ctrl-C or SIGTERM)"

    local rc=0
    wait "$BROKER_PID" || rc=$?
    BROKER_PID=
    if [ "$rc" = 0 ]; then
        say "$NAME stopped by itself (status 0)"
        exit 0
    fi
    show_log_tail "${LOGS[@]}"
    die "$NAME exited by itself (status $rc)"
}

case ${1:-} in
--install | install)
    shift
    [ $# -gt 0 ] || usage
    names=("$@")
    if [ "$*" = all ]; then read -r -a names <<<"$BROKERS"; fi
    for name in "${names[@]}"; do install_broker "$name"; done
    ;;
redis | kafka | rabbitmq | jetstream | mqtt)
    [ $# = 1 ] || usage
    run_broker "$1"
    ;;
*) usage ;;
esac
