#!/usr/bin/env bash
# Runs a command and fails if any process in its tree talks to an address outside loopback.
#
#   tests/controlplane/check-loopback.sh cargo test -p wasmray-e2e
#
# Every 0.2 s it lists the TCP and UDP sockets (ss -tunp; run as root to see every process)
# of the command's process tree, in every network namespace it uses, and records each peer
# address that is not 127.0.0.0/8 or
# ::1 (unconnected sockets, shown with a "*" peer, are skipped). Sampling can miss a
# connection that opens and closes between two samples; a refused dial to a non-loopback
# address would still show as SYN-SENT for a while.
set -uo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

seen=$(mktemp)
trap 'rm -f "$seen"' EXIT

descendants() { # descendants PID: PID and every process below it
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            tree[root] = 1
            do { grew = 0; for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; grew = 1 } } while (grew)
            for (p in tree) print p
        }'
}

sample() { # sample PID...: print "peer process" for non-loopback peers of those pids
    # Every network namespace the processes live in (the pod runner gives each RayCluster
    # its own): one `ss` per namespace, entered through one of its processes.
    local pid ns namespaces=" "
    for pid in "$@"; do
        ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
        case "$namespaces" in *" $ns "*) continue ;; esac
        namespaces+="$ns "
        nsenter --net="/proc/$pid/ns/net" ss -Htunp state all 2>/dev/null
    done | awk -v pids=" $* " '
        {
            peer = $6
            if (peer ~ /\*$/ || peer ~ /^127\./ || peer ~ /^\[::1\]/ || peer ~ /^\[::ffff:127\./) next
            proc = $0; sub(/.*users:/, "", proc)
            n = split(proc, parts, /pid=/)
            for (i = 2; i <= n; i++) { split(parts[i], f, /[,)]/); if (index(pids, " " f[1] " ")) { print $1, $2, $5, "->", peer, proc; break } }
        }'
}

"$@" &
cmd=$!
samples=0
while kill -0 "$cmd" 2>/dev/null; do
    # shellcheck disable=SC2046
    sample $(descendants "$cmd") >>"$seen"
    samples=$((samples + 1))
    sleep 0.2
done
wait "$cmd"
status=$?

if [[ -s $seen ]]; then
    echo "check-loopback: non-loopback traffic seen:" >&2
    sort -u "$seen" >&2
    exit 1
fi
echo "check-loopback: $samples samples, every peer inside 127.0.0.0/8 (command exit status $status)" >&2
exit "$status"
