#!/usr/bin/env bash
# A Duokey cluster on this machine (DESIGN D49): two AS+GMS nodes and two CS
# nodes, one PostgreSQL database and one NATS server shared by all four.
# For trying the cluster mode and for tests; a production layout is in
# deploy/README.md.
#
#   scripts/cluster.sh up               # start it; the last line is client.toml's path
#   scripts/cluster.sh enroll alice     # a one-time token (the last word printed)
#   scripts/cluster.sh status
#   scripts/cluster.sh down
#
# Run with --help for the settings (environment variables).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/cluster.sh COMMAND

A Duokey cluster on 127.0.0.1: nodes gms1 and gms2 (AS+GMS) and cs1 and cs2
(CS), sharing one PostgreSQL database and one NATS server.

Commands:
  up                  create what is missing (CA, certificates, database, configs),
                      start the four nodes and wait until each listens; the last
                      line printed is the absolute path of the terminals' client.toml.
                      With some nodes running (one crashed, or was killed), starts
                      the others only
  down                stop the nodes this script started (their recorded pids only)
  status              each node: its port, its pid, whether it runs (exit 0 when all four run)
  enroll USER [ARGS]  a one-time enrolment token for USER, the last word printed
                      (ARGS go to `duokey-server enroll`, e.g. --ttl 2h, --replace)
  -h, --help          this text

Settings (environment variables):
  DUOKEY_CLUSTER_DIR      where configs, certificates, logs and pids go (./duokey-cluster)
  DUOKEY_CLUSTER_DB       PostgreSQL database, created if absent (duokey_cluster)
  DUOKEY_CLUSTER_PORT     base port: gms1 = PORT+1, gms2 = PORT+2, cs1 = PORT+3,
                          cs2 = PORT+4 (7500)
  DUOKEY_CLUSTER_SUBJECT  NATS subject prefix; give each cluster its own
                          (duokey.cluster.<DB>)
  DUOKEY_POSTGRES         PostgreSQL server URL, without a database name
                          (postgres://postgres@127.0.0.1:5432)
  DUOKEY_NATS_URL         NATS server (nats://127.0.0.1:4222)
  DUOKEY_SERVER           the duokey-server binary (else duokey-server on PATH, else
                          target/release/duokey-server of this repository, built if absent)

Example:
  client=$(scripts/cluster.sh up | tail -n 1)
  token=$(scripts/cluster.sh enroll alice | awk '{print $NF}')
  duokey --home alice init --user alice --token "$token" --config "$client"
EOF
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

say() { echo "$*"; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster_dir="${DUOKEY_CLUSTER_DIR:-./duokey-cluster}"
db_name="${DUOKEY_CLUSTER_DB:-duokey_cluster}"
base_port="${DUOKEY_CLUSTER_PORT:-7500}"
subject="${DUOKEY_CLUSTER_SUBJECT:-duokey.cluster.$db_name}"
postgres="${DUOKEY_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
postgres="${postgres%/}"
nats_url="${DUOKEY_NATS_URL:-nats://127.0.0.1:4222}"
nodes=(gms1 gms2 cs1 cs2)
wait_secs=30
stop_secs=10

check_settings() {
    [[ "$db_name" =~ ^[a-z_][a-z0-9_]*$ ]] \
        || die "DUOKEY_CLUSTER_DB=$db_name: use lower-case letters, digits and _ (a PostgreSQL name that needs no quoting)"
    if ! [[ "$base_port" =~ ^[1-9][0-9]*$ ]] || ((base_port < 1 || base_port + 4 > 65535)); then
        die "DUOKEY_CLUSTER_PORT=$base_port: give a port from 1 to 65531 (the nodes use the four after it)"
    fi
    [[ "$subject" =~ ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$ ]] \
        || die "DUOKEY_CLUSTER_SUBJECT=$subject: a NATS subject prefix is dot-separated tokens of letters, digits, _ and -"
    [[ "$postgres" =~ ^postgres(ql)?:// ]] \
        || die "DUOKEY_POSTGRES=$postgres: give a postgres:// URL without a database name, e.g. postgres://postgres@127.0.0.1:5432"
    [[ "$postgres" != *\?* ]] \
        || die "DUOKEY_POSTGRES=$postgres: leave out the ?parameters (the database name is appended to this URL)"
    [[ "$nats_url" =~ ^nats:// ]] \
        || die "DUOKEY_NATS_URL=$nats_url: give a nats:// URL, e.g. nats://127.0.0.1:4222"
}

# The cluster directory as an absolute path (the configs name their files by
# absolute paths, so they work from any directory). Creates it if asked.
absolute_dir() {
    if [ "${1:-}" = create ]; then
        mkdir -p "$cluster_dir" || die "cannot create $cluster_dir: set DUOKEY_CLUSTER_DIR to a writable directory"
    fi
    if [ -d "$cluster_dir" ]; then
        cluster_dir="$(cd "$cluster_dir" && pwd -P)"
    fi
}

node_port() {
    case "$1" in
        gms1) echo $((base_port + 1)) ;;
        gms2) echo $((base_port + 2)) ;;
        cs1) echo $((base_port + 3)) ;;
        cs2) echo $((base_port + 4)) ;;
        *) die "unknown node $1" ;;
    esac
}

node_config() { echo "$cluster_dir/$1/duokey.toml"; }
pid_file() { echo "$cluster_dir/$1/pid"; }

# The recorded pid of a node, or nothing.
recorded_pid() {
    local f
    f="$(pid_file "$1")"
    [ -f "$f" ] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$f")"
    echo "$pid"
}

# True if PID is a live process (a zombie counts as gone).
process_running() {
    local pid="$1" stat
    kill -0 "$pid" 2>/dev/null || return 1
    if stat="$(cat "/proc/$pid/stat" 2>/dev/null)"; then
        stat="${stat##*) }"
        [ "${stat%% *}" != Z ] || return 1
    fi
}

# Set by `up` once it has started the nodes: their pids are its own children,
# which may not have reached exec yet (so their command line is not the
# server's yet).
own_children=0

# True if PID is a live process running this node's configuration (so a pid
# reused by an unrelated process is never taken for, or signalled as, a node).
node_alive() {
    local node="$1" pid="$2"
    [ -n "$pid" ] || return 1
    process_running "$pid" || return 1
    [ "$own_children" = 0 ] || return 0
    if [ -r "/proc/$pid/cmdline" ]; then
        # A zombie has an empty command line: it counts as gone.
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$(node_config "$node")"
    fi
}

# True if HOST:PORT accepts TCP connections.
port_open() {
    local host="$1" port="$2"
    if command -v timeout >/dev/null 2>&1; then
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 2 bash -c ': <>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
    else
        (: <>"/dev/tcp/$host/$port") 2>/dev/null
    fi
}

# HOST and PORT of a URL such as scheme://user:pass@host:port/path,
# printed as "HOST PORT" (DEFAULT_PORT when the URL names none).
url_host_port() {
    local url="$1" default_port="$2" rest host port
    rest="${url#*://}"
    rest="${rest%%,*}"
    rest="${rest%%/*}"
    rest="${rest##*@}"
    if [[ "$rest" =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}"
        port="${BASH_REMATCH[3]:-$default_port}"
    elif [[ "$rest" == *:* ]]; then
        host="${rest%:*}"
        port="${rest##*:}"
    else
        host="$rest"
        port="$default_port"
    fi
    echo "${host:-127.0.0.1} ${port:-$default_port}"
}

# A TOML basic string.
toml_str() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# The duokey-server binary, in $server.
find_server() {
    if [ -n "${DUOKEY_SERVER:-}" ]; then
        server="$DUOKEY_SERVER"
        [ -x "$server" ] || die "DUOKEY_SERVER=$server is not an executable file: give the path of a duokey-server binary"
        return
    fi
    if server="$(command -v duokey-server 2>/dev/null)"; then
        return
    fi
    server="$repo_root/target/release/duokey-server"
    if [ ! -x "$server" ]; then
        command -v cargo >/dev/null 2>&1 \
            || die "no duokey-server found (DUOKEY_SERVER unset, none on PATH, no $server) and no cargo to build it: set DUOKEY_SERVER to a duokey-server binary"
        echo "No duokey-server on PATH and no $server: building it (cargo build --release --bin duokey-server; set DUOKEY_SERVER to use another binary)." >&2
        (cd "$repo_root" && cargo build --release --bin duokey-server) >&2 \
            || die "building duokey-server failed (above); fix it, or set DUOKEY_SERVER to a duokey-server binary"
        [ -x "$server" ] || die "cargo built nothing at $server: set DUOKEY_SERVER to a duokey-server binary"
    fi
}

ensure_database() {
    local db_url="$postgres/$db_name"
    if ! command -v psql >/dev/null 2>&1; then
        local hp
        read -r -a hp <<<"$(url_host_port "$postgres" 5432)"
        port_open "${hp[0]}" "${hp[1]}" \
            || die "PostgreSQL at ${hp[0]}:${hp[1]} does not accept connections: start it (e.g. pg_ctlcluster <version> main start) or set DUOKEY_POSTGRES"
        say "psql is not installed, so the database was not checked: if $db_name does not exist yet, create it with"
        say "    createdb -h ${hp[0]} -p ${hp[1]} -U postgres $db_name      (or: CREATE DATABASE $db_name; in any PostgreSQL client)"
        say "  and run this again if a node then fails to start."
        return
    fi
    local found
    found="$(PGCONNECT_TIMEOUT=5 psql -w "$postgres/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname='$db_name'" 2>&1)" \
        || die "cannot reach PostgreSQL at $postgres: $found
  Start it (e.g. pg_ctlcluster <version> main start), or set DUOKEY_POSTGRES to a server URL (no database name)."
    if [ "$found" = 1 ]; then
        say "PostgreSQL: database $db_name exists ($db_url)."
    else
        local out
        out="$(PGCONNECT_TIMEOUT=5 psql -w "$postgres/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db_name" 2>&1)" \
            || die "cannot create database $db_name at $postgres: $out
  Create it yourself (CREATE DATABASE $db_name;) with a role that may, or set DUOKEY_POSTGRES to a URL with such a role."
        say "PostgreSQL: created database $db_name ($db_url)."
    fi
}

ensure_nats() {
    local hp
    read -r -a hp <<<"$(url_host_port "$nats_url" 4222)"
    if port_open "${hp[0]}" "${hp[1]}"; then
        say "NATS: $nats_url accepts connections."
        return
    fi
    case "${hp[0]}" in
        127.0.0.1 | localhost) ;;
        *) die "NATS at ${hp[0]}:${hp[1]} does not accept connections: start it, or set DUOKEY_NATS_URL" ;;
    esac
    [ -x /usr/sbin/nats-server ] \
        || die "NATS at ${hp[0]}:${hp[1]} does not accept connections and /usr/sbin/nats-server is not installed: install it (apt-get install nats-server) or start a NATS server and set DUOKEY_NATS_URL"
    say "NATS: nothing on ${hp[0]}:${hp[1]}; starting /usr/sbin/nats-server."
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p "${hp[1]}" -js -sd /var/lib/nats-server >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do
        port_open 127.0.0.1 "${hp[1]}" && { say "NATS: started on 127.0.0.1:${hp[1]}."; return; }
        sleep 0.1
    done
    die "NATS did not start on 127.0.0.1:${hp[1]}: run it by hand to see why
    /usr/sbin/nats-server -a 127.0.0.1 -p ${hp[1]} -js -sd /var/lib/nats-server
  (start-stop-daemon does nothing if a nats-server already runs on another port), or set DUOKEY_NATS_URL"
}

ensure_certificates() {
    local ca="$cluster_dir/ca" out
    if [ ! -f "$ca/ca.pem" ]; then
        out="$("$server" ca init --dir "$ca" 2>&1)" || die "creating the CA failed: $out"
        say "$out"
    fi
    local node roles
    for node in "${nodes[@]}"; do
        case "$node" in
            gms*) roles=as,gms ;;
            cs*) roles=cs ;;
        esac
        mkdir -p "$cluster_dir/$node"
        if [ ! -f "$cluster_dir/$node/server.pem" ] || [ ! -f "$cluster_dir/$node/server.key" ]; then
            out="$("$server" ca issue-server --ca-dir "$ca" --name 127.0.0.1 --roles "$roles" \
                --out "$cluster_dir/$node" 2>&1)" || die "issuing the certificate of $node failed: $out"
            say "$out (roles $roles)"
        fi
    done
    if [ ! -f "$cluster_dir/revoked.txt" ]; then
        : >"$cluster_dir/revoked.txt"
    fi
}

write_config() {
    local node="$1" file db_url cs_urls
    file="$(node_config "$node")"
    db_url="$(toml_str "$postgres/$db_name")"
    cs_urls="[\"https://127.0.0.1:$(node_port cs1)\", \"https://127.0.0.1:$(node_port cs2)\"]"
    {
        echo "# Written by scripts/cluster.sh up: node $node of the cluster in $cluster_dir."
        echo "# Rewritten at every \`up\`: change the settings through its environment variables."
        echo "data_dir = $(toml_str "$cluster_dir/$node")"
        case "$node" in
            gms*)
                echo 'roles = ["as", "gms"]'
                echo "gms_addr = \"127.0.0.1:$(node_port "$node")\""
                echo '# Not bound (no "cs" role), but required.'
                echo 'cs_addr = "127.0.0.1:0"'
                echo "# The GMS tries each CS in turn."
                echo "cs_url = $cs_urls"
                ;;
            cs*)
                echo 'roles = ["cs"]'
                echo '# Not bound (no "as" or "gms" role), but required.'
                echo 'gms_addr = "127.0.0.1:0"'
                echo "cs_addr = \"127.0.0.1:$(node_port "$node")\""
                ;;
        esac
        echo "# The nodes of one cluster share the NATS subject prefix."
        echo "nats_url = $(toml_str "$nats_url")"
        echo "nats_subject_prefix = $(toml_str "$subject")"
        echo
        echo "[tls]"
        echo "ca_cert = $(toml_str "$cluster_dir/ca/ca.pem")"
        case "$node" in
            gms*) echo "ca_key = $(toml_str "$cluster_dir/ca/ca.key")" ;;
        esac
        echo 'cert = "server.pem"'
        echo 'key = "server.key"'
        echo "# One list for the whole cluster: every node reads the same file."
        echo "revocation_list = $(toml_str "$cluster_dir/revoked.txt")"
        echo
        echo "[database]"
        echo "as = $db_url"
        echo "gms = $db_url"
        echo "cs = $db_url"
    } >"$file.partial"
    chmod 600 "$file.partial"
    mv "$file.partial" "$file"
}

write_client_config() {
    local node args=()
    for node in gms1 gms2 cs1 cs2; do
        args+=(--config "$(node_config "$node")")
    done
    local out
    out="$("$server" client-config "${args[@]}" --host 127.0.0.1 \
        --out "$cluster_dir/client.toml" 2>&1)" || die "writing client.toml failed: $out"
}

log_tail() {
    local log="$cluster_dir/$1/server.log"
    if [ -s "$log" ]; then
        echo "--- last lines of $log:" >&2
        tail -n 20 "$log" >&2
        echo "---" >&2
    fi
}

# Stops the given nodes (TERM, then KILL after $stop_secs) and removes their
# pid files; says what it stopped.
stop_nodes() {
    local node pid running=()
    for node in "$@"; do
        pid="$(recorded_pid "$node")"
        [ -n "$pid" ] || continue
        if node_alive "$node" "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            running+=("$node")
        else
            rm -f "$(pid_file "$node")"
            say "$node was not running (pid $pid); removed its pid file."
        fi
    done
    [ ${#running[@]} -gt 0 ] || return 0
    local i left
    for ((i = 0; i < stop_secs * 10; i++)); do
        left=0
        for node in "${running[@]}"; do
            node_alive "$node" "$(recorded_pid "$node")" && left=1
        done
        [ "$left" = 1 ] || break
        sleep 0.1
    done
    for node in "${running[@]}"; do
        pid="$(recorded_pid "$node")"
        if node_alive "$node" "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            say "Stopped $node (pid $pid) with SIGKILL: it did not end within ${stop_secs}s of SIGTERM."
        else
            say "Stopped $node (pid $pid)."
        fi
        rm -f "$(pid_file "$node")"
    done
}

cmd_up() {
    check_settings
    # Configs hold the database URL (and its password, if any); keys stay private.
    umask 077
    absolute_dir create

    # Already running?
    local node pid alive=() dead=()
    for node in "${nodes[@]}"; do
        pid="$(recorded_pid "$node")"
        if node_alive "$node" "$pid"; then alive+=("$node (pid $pid)"); else dead+=("$node"); fi
    done
    if [ ${#dead[@]} -eq 0 ]; then
        say "The cluster in $cluster_dir is already running: ${alive[*]}. Nothing done."
        [ -f "$cluster_dir/client.toml" ] || { find_server; write_client_config; }
        say "Terminals use:"
        say "$cluster_dir/client.toml"
        return 0
    fi
    # Partly running (a node crashed or was killed): start the others only.
    local to_start=("${nodes[@]}")
    if [ ${#alive[@]} -gt 0 ]; then
        say "The cluster in $cluster_dir is partly running (${alive[*]}): starting ${dead[*]}."
        to_start=("${dead[@]}")
    fi

    find_server
    say "Server binary: $server"
    ensure_database
    ensure_nats
    ensure_certificates

    local port
    for node in "${to_start[@]}"; do
        port="$(node_port "$node")"
        if port_open 127.0.0.1 "$port"; then
            die "port $port (for $node) is already in use by another program: stop it, or choose other ports with DUOKEY_CLUSTER_PORT (now $base_port; the nodes use the four after it)"
        fi
        rm -f "$(pid_file "$node")"
        write_config "$node"
    done
    for node in "${to_start[@]}"; do
        local out
        if ! out="$("$server" config --check "$(node_config "$node")" 2>&1)"; then
            case "$out" in
                *nats* | *cs_url*)
                    die "$server does not accept the cluster configuration of $node:
  $out
  It is probably older than the cluster mode: rebuild it, or set DUOKEY_SERVER to a newer binary." ;;
                *) die "the configuration of $node is not valid: $out" ;;
            esac
        fi
    done

    # The CS nodes first: the GMS nodes push membership to them. A restarted
    # node's previous log is kept as server.log.1 (how it ended).
    local started=()
    for node in cs1 cs2 gms1 gms2; do
        case " ${to_start[*]} " in *" $node "*) ;; *) continue ;; esac
        [ -s "$cluster_dir/$node/server.log" ] && mv "$cluster_dir/$node/server.log" "$cluster_dir/$node/server.log.1"
        nohup "$server" run --config "$(node_config "$node")" \
            </dev/null >"$cluster_dir/$node/server.log" 2>&1 &
        echo "$!" >"$(pid_file "$node")"
        started+=("$node")
    done
    own_children=1

    local waiting=("${started[@]}") still deadline=$((SECONDS + wait_secs))
    while [ ${#waiting[@]} -gt 0 ]; do
        still=()
        for node in "${waiting[@]}"; do
            pid="$(recorded_pid "$node")"
            if ! node_alive "$node" "$pid"; then
                log_tail "$node"
                stop_nodes "${started[@]}" >&2
                die "$node exited while starting (its log is above, and in $cluster_dir/$node/server.log); the other nodes were stopped."
            fi
            # Probed once the node says it listens (its first line on standard
            # output): each probe is logged by the node as a refused handshake.
            if grep -q '^Duokey server:' "$cluster_dir/$node/server.log" 2>/dev/null \
                && port_open 127.0.0.1 "$(node_port "$node")"; then
                continue
            fi
            still+=("$node")
        done
        waiting=("${still[@]+"${still[@]}"}")
        [ ${#waiting[@]} -gt 0 ] || break
        if ((SECONDS >= deadline)); then
            for node in "${waiting[@]}"; do log_tail "$node"; done
            stop_nodes "${started[@]}" >&2
            die "${waiting[*]} did not listen within ${wait_secs}s (logs in $cluster_dir/NODE/server.log); the nodes were stopped."
        fi
        sleep 0.2
    done

    write_client_config
    for node in "${nodes[@]}"; do
        say "$node: pid $(recorded_pid "$node"), https://127.0.0.1:$(node_port "$node"), log $cluster_dir/$node/server.log"
    done
    say "Database $postgres/$db_name, NATS $nats_url, subject prefix $subject."
    say "Enrol a user: scripts/cluster.sh enroll USER; stop: scripts/cluster.sh down."
    say "Terminals use:"
    say "$cluster_dir/client.toml"
}

cmd_down() {
    absolute_dir
    local node any=0
    for node in "${nodes[@]}"; do
        [ -f "$(pid_file "$node")" ] && any=1
    done
    if [ "$any" = 0 ]; then
        say "Nothing to stop: no node of $cluster_dir was started by this script (no pid file)."
        return 0
    fi
    stop_nodes "${nodes[@]}"
}

cmd_status() {
    check_settings
    absolute_dir
    local node pid port state all=0
    say "Cluster in $cluster_dir:"
    for node in "${nodes[@]}"; do
        pid="$(recorded_pid "$node")"
        port="$(node_port "$node")"
        if node_alive "$node" "$pid"; then
            state="running"
        elif [ -n "$pid" ]; then
            state="not running (stale pid file; scripts/cluster.sh down removes it)"
            all=1
        else
            state="not running"
            pid="-"
            all=1
        fi
        printf '%-5s port %-5s pid %-8s %s\n' "$node" "$port" "$pid" "$state"
    done
    return "$all"
}

cmd_enroll() {
    [ $# -ge 1 ] || die "give the user to enrol: scripts/cluster.sh enroll USER [--ttl 2h] [--replace]"
    absolute_dir
    local config
    config="$(node_config gms1)"
    [ -f "$config" ] || die "no $config: run \`scripts/cluster.sh up\` first (with the same DUOKEY_CLUSTER_DIR)"
    local user="$1"
    shift
    find_server
    exec "$server" enroll --config "$config" "$user" "$@"
}

case "${1:-}" in
    up) shift; [ $# -eq 0 ] || die "up takes no argument (settings are environment variables: --help)"; cmd_up ;;
    down) shift; [ $# -eq 0 ] || die "down takes no argument"; cmd_down ;;
    status) shift; [ $# -eq 0 ] || die "status takes no argument"; cmd_status ;;
    enroll) shift; cmd_enroll "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "cluster.sh: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
