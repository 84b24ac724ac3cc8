#!/bin/sh
# mmdebstrap customize hook ($1 = the root file system): the appliance account and root.
#
# ems: uid 1000, login shell /usr/local/bin/appliance-shell (registered in /etc/shells), home
# /home/ems owned by root (nothing there is the account's to change), password "ems" (public, as on
# the vendor's appliance) set through chpasswd's standard input and expired, so the first login
# (SSH keyboard-interactive or the serial console) must change it. In the group systemd-journal:
# `execute log show agent|system` reads the journal with journalctl's fixed options. root: locked.
#
# appliance-agent: the HA agent's system user (nologin, home /var/lib/appliance-agent, its
# StateDirectory: the master key and the credentials). ems is not in its group.
# proc: the group that /proc's hidepid=invisible exempts (/etc/fstab gets its number); polkitd is in
# it (polkit.service drop-in), nobody else.
set -eu
ROOT="$1"
SHELL_PATH=/usr/local/bin/appliance-shell

chroot "$ROOT" useradd --uid 1000 --user-group --no-create-home --home-dir /home/ems \
    --shell "$SHELL_PATH" --comment "Appliance administrator" --groups systemd-journal ems
install -d -m 0755 -o root -g root "$ROOT/home/ems"
# sshd (pam_motd) and login(1) print the message of the day and the last-login line to stdout, even
# for `printf 'cmd\n' | ssh ems@vm`, where it would be read as command output: .hushlogin silences
# both. Root-owned like the home itself, so the account cannot remove it.
install -m 0644 -o root -g root /dev/null "$ROOT/home/ems/.hushlogin"
chroot "$ROOT" add-shell "$SHELL_PATH"
printf 'ems:ems\n' | chroot "$ROOT" chpasswd
chroot "$ROOT" chage -d 0 ems
chroot "$ROOT" passwd -q -l root

chroot "$ROOT" useradd --system --user-group --no-create-home --home-dir /var/lib/appliance-agent \
    --shell /usr/sbin/nologin --comment "Appliance HA agent" appliance-agent
chroot "$ROOT" groupadd --system proc
PROC_GID=$(chroot "$ROOT" getent group proc | cut -d: -f3)
sed -i "s/hidepid=invisible\( \|\$\)/hidepid=invisible,gid=$PROC_GID\1/" "$ROOT/etc/fstab"
grep -q "hidepid=invisible,gid=$PROC_GID " "$ROOT/etc/fstab"
