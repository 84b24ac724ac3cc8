#!/bin/sh
# mmdebstrap customize hook ($1 = the root file system): sshd, polkit, ping, state, units, names.
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

# The first login cannot be raced over the network: in sshd's PAM account check, an expired password
# (pam_unix: new_authtok_reqd) falls through to pam_deny, so sshd refuses the login ("by PAM account
# configuration") instead of asking for a new password, for passwords and keys alike; any other
# answer skips pam_deny and common-account decides as before. login(1) (the console) keeps Debian's
# common-account, where the change is forced.
sed -i 's/^@include common-account$/# appliance: an expired password never logs in over SSH (change it at the console)\
account [new_authtok_reqd=ignore default=1] pam_unix.so\
account requisite pam_deny.so\
@include common-account/' "$ROOT/etc/pam.d/sshd"
grep -q '^account \[new_authtok_reqd=ignore default=1\] pam_unix.so$' "$ROOT/etc/pam.d/sshd"

# pam_faillock around pam_unix in common-auth (both profiles in /usr/share/pam-configs).
chroot "$ROOT" pam-auth-update --package --enable appliance-faillock-preauth appliance-faillock
grep -q 'pam_faillock.so preauth' "$ROOT/etc/pam.d/common-auth"
grep -q 'pam_faillock.so authfail' "$ROOT/etc/pam.d/common-auth"

# No sudo: nothing may have brought a sudoers file or the program.
if [ -e "$ROOT/etc/sudoers.d/appliance" ] || [ -e "$ROOT/usr/bin/sudo" ]; then
    echo "customize03-system: sudo or a sudoers file is in the image" >&2
    exit 1
fi

# polkit: the rules written from the image's configuration (again at every boot, by
# appliance-polkit-rules.service). The directory stays polkitd's (0700): ems cannot read the policy.
chroot "$ROOT" /opt/appliance/venv/bin/python3 -I -m appliance.privileged.polkit \
    /etc/appliance/appliance.toml /etc/polkit-1/rules.d/50-appliance.rules

# Programs of the image.
chmod 0755 "$ROOT/usr/libexec/appliance/firstboot" "$ROOT/usr/libexec/appliance/seed-keys" "$ROOT/usr/libexec/appliance"
chmod 0755 "$ROOT/etc/appliance"
chmod 0644 "$ROOT/etc/appliance/appliance.toml"

# ping needs CAP_NET_RAW; iputils-ping's postinst sets it when libcap2-bin was configured first.
if ! chroot "$ROOT" getcap /usr/bin/ping | grep -q cap_net_raw; then
    chroot "$ROOT" setcap cap_net_raw+ep /usr/bin/ping
fi
chmod u-s "$ROOT/usr/bin/ping"

# The state directory shared by the agent (owner) and the shell (group ems, setgid), and the agent's
# own for the key and the credentials (empty: first boot fills them). See tmpfiles.d/appliance.conf.
install -d -m 2770 "$ROOT/var/lib/appliance"
chroot "$ROOT" chown appliance-agent:ems /var/lib/appliance
install -d -m 0700 "$ROOT/var/lib/appliance-agent"
chroot "$ROOT" chown appliance-agent:appliance-agent /var/lib/appliance-agent

# The pending `system set network` change (root's; the helper keeps the previous file there).
install -d -m 0755 -o root -g root "$ROOT/var/lib/appliance-network"

# Units (offline enable: symlinks only). The demo unit is started by the agent, never at boot.
# appliance-network-revert restores an unconfirmed network change at boot, before systemd-networkd.
chroot "$ROOT" systemctl enable --quiet appliance-firstboot.service appliance-agent.service \
    ssh.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    appliance-network-revert.service serial-getty@ttyS0.service appliance-privhelper.socket \
    appliance-polkit-rules.service appliance-seed.service
# systemd's interactive first-boot wizard would ask for a locale on the (serial) console of a new VM;
# the image sets what it needs (/etc/locale.conf, /etc/localtime) and never asks.
chroot "$ROOT" systemctl mask --quiet systemd-firstboot.service

# Names and login noise. /etc/resolv.conf is systemd-resolved's stub (127.0.0.53), which knows the DNS
# servers networkd has: from DHCP, or from `system set network --dns`.
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
rm -f "$ROOT/etc/update-motd.d/10-uname"
: > "$ROOT/etc/motd"
