#!/bin/sh
# mmdebstrap customize hook ($1 = the root file system): nothing node-specific or secret in the image.
#
# Host keys, machine id, TLS key, PostgreSQL cluster, systemd's credential secret and random seed are
# made on each appliance at first boot (ssh.service drop-in, systemd, appliance-firstboot).
set -eu
ROOT="$1"

# The PostgreSQL cluster the package's postinst created (same system identifier on every node).
if [ -d "$ROOT/etc/postgresql/15/main" ]; then
    chroot "$ROOT" pg_dropcluster 15 main
fi
rm -f "$ROOT/etc/ssl/private/ssl-cert-snakeoil.key" "$ROOT/etc/ssl/certs/ssl-cert-snakeoil.pem"
rm -f "$ROOT"/etc/ssh/ssh_host_*
: > "$ROOT/etc/machine-id"
if [ -f "$ROOT/var/lib/dbus/machine-id" ] && [ ! -L "$ROOT/var/lib/dbus/machine-id" ]; then
    rm -f "$ROOT/var/lib/dbus/machine-id"
fi
rm -f "$ROOT/var/lib/systemd/credential.secret" "$ROOT/var/lib/systemd/random-seed"
# Build logs (times, host details) and backup files.
rm -f "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old
rm -rf "$ROOT/var/tmp/"*

# Nothing may have been created in the state directories at build time (no key, no credentials).
for dir in /var/lib/appliance /var/lib/appliance-agent; do
    if [ -n "$(ls -A "$ROOT$dir")" ]; then
        echo "customize04-cleanup: $dir is not empty in the image" >&2
        exit 1
    fi
done
