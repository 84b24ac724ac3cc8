#!/bin/sh
# mmdebstrap customize hook ($1 = the root file system): sshd, sudoers, ping, state, units, names.
set -eu
ROOT="$1"
: "${IMAGE_SSHD_CONF:?image/build.sh sets IMAGE_SSHD_CONF}"
: "${IMAGE_OVERLAY:?image/build.sh sets IMAGE_OVERLAY}"

# The overlay (synced in before this hook) belongs to root, whoever checked the source out.
(cd "$IMAGE_OVERLAY" && find . -mindepth 1) | while read -r path; do
    chown -h root:root "$ROOT/${path#./}"
done

# sshd: the drop-in of image/sshd/ (the file the SSH tests check), unchanged.
install -m 0644 -o root -g root "$IMAGE_SSHD_CONF" "$ROOT/etc/ssh/sshd_config.d/50-appliance.conf"

# sudoers: 0440 and valid, or the build fails.
chmod 0440 "$ROOT/etc/sudoers.d/appliance"
chroot "$ROOT" visudo -cf /etc/sudoers.d/appliance >/dev/null
chroot "$ROOT" visudo -c >/dev/null

# Programs of the image.
chmod 0755 "$ROOT/usr/libexec/appliance/firstboot" "$ROOT/usr/libexec/appliance"
chmod 0755 "$ROOT/etc/appliance"
chmod 0644 "$ROOT/etc/appliance/appliance.toml"

# ping needs CAP_NET_RAW; iputils-ping's postinst sets it when libcap2-bin was configured first.
if ! chroot "$ROOT" getcap /usr/bin/ping | grep -q cap_net_raw; then
    chroot "$ROOT" setcap cap_net_raw+ep /usr/bin/ping
fi
chmod u-s "$ROOT/usr/bin/ping"

# The state directory of the shell and the agent (empty: first boot fills it).
install -d -m 0750 "$ROOT/var/lib/appliance"
chroot "$ROOT" chown ems:ems /var/lib/appliance

# The pending `system set network` change (root's; the helper keeps the previous file there).
install -d -m 0755 -o root -g root "$ROOT/var/lib/appliance-network"

# Units (offline enable: symlinks only). The demo unit is started by the agent, never at boot.
# appliance-network-revert restores an unconfirmed network change at boot, before systemd-networkd.
chroot "$ROOT" systemctl enable --quiet appliance-firstboot.service appliance-agent.service \
    ssh.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    appliance-network-revert.service serial-getty@ttyS0.service
# systemd's interactive first-boot wizard would ask for a locale on the (serial) console of a new VM;
# the image sets what it needs (/etc/locale.conf, /etc/localtime) and never asks.
chroot "$ROOT" systemctl mask --quiet systemd-firstboot.service

# Names and login noise. /etc/resolv.conf is systemd-resolved's stub (127.0.0.53), which knows the DNS
# servers networkd has: from DHCP, or from `system set network --dns`.
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
rm -f "$ROOT/etc/update-motd.d/10-uname"
: > "$ROOT/etc/motd"
