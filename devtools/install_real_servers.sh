#!/bin/bash
# Installs the Debian servers the sandbox runs for real in place of their images
# (devtools/sandbox/real_servers): PostgreSQL 15, PgBouncer, nginx, coturn and the Prometheus
# node exporter. Their packages would start system-wide daemons on this machine, which would
# hold the ports and sockets the sandbox's containers need: a policy-rc.d that answers 101
# ("action forbidden", invoke-rc.d(8)) keeps them from starting while apt runs, and any daemon
# of theirs still running in this machine's own namespaces afterwards is stopped.
# Needs root and apt-get (Debian 12); does nothing when every server is present.
set -euo pipefail

# libnginx-mod-stream: Debian builds nginx's stream modules (the pack's nginx.conf has a stream
# block) as a module of their own; the nginx image has them built in.
packages=(postgresql pgbouncer nginx libnginx-mod-stream coturn prometheus-node-exporter)
binaries=(/usr/lib/postgresql/15/bin/postgres /usr/sbin/pgbouncer /usr/sbin/nginx
          /usr/lib/nginx/modules/ngx_stream_module.so
          /usr/bin/turnserver /usr/bin/prometheus-node-exporter)
services=(postgresql pgbouncer nginx coturn prometheus-node-exporter)

missing=0
# -e, not -x: the stream module is a shared object, not executable, and -x sent every run of
# dialog-local through apt-get update and install again.
for binary in "${binaries[@]}"; do
    [ -e "$binary" ] || missing=1
done
[ "$missing" = 1 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_real_servers: missing; as root on Debian: apt-get install ${packages[*]}" >&2
    exit 0
fi

echo "dialog-local: installing ${packages[*]} for the sandbox's real servers..." >&2
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
    saved="$(mktemp)"
    cp -p "$policy" "$saved"
fi
restore() {
    if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore EXIT
printf '#!/bin/sh\n# dialog-local: no service starts while the sandbox servers install\nexit 101\n' \
    > "$policy"
chmod 0755 "$policy"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null

# Daemons of these packages running in this machine's own namespaces (not a sandbox host's
# container, which has its own mount namespace) are stopped.
own_ns="$(readlink /proc/self/ns/mnt)"
for service in "${services[@]}"; do
    [ -x "/etc/init.d/$service" ] || continue
    "/etc/init.d/$service" stop >/dev/null 2>&1 || true
done
for binary in "${binaries[@]}"; do
    for pid in $(pgrep -f -- "^$binary( |$)" || true); do
        if [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$own_ns" ]; then
            kill "$pid" 2>/dev/null || true
        fi
    done
done
