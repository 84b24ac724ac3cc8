#!/usr/bin/env bash
# Installs everything the product and its tests need on a fresh Debian 12 machine. Idempotent:
# a second run installs nothing. Debian packages: ping and traceroute (the network checks),
# PostgreSQL 15 (server binaries for the test clusters and the sandbox, pg_dump/pg_restore for the
# backups), repmgr (the tests' repmgr-managed database pair), tmux (terminal tests), OpenSSH's sshd,
# login and passwd (the SSH and serial-console tests), HAProxy (the sandbox's load balancer and its
# tests), iproute2 (the VIP), venv support. Python packages: the project and its dev extras, into
# ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iputils-ping traceroute libcap2-bin postgresql-15 postgresql-client-15 postgresql-15-repmgr tmux
          python3-venv util-linux openssh-server login passwd haproxy iproute2)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "setup: installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # openssh-server is here for the tests, which run their own sshd on a loopback port: do not leave a
    # new sshd listening on port 22 of a machine that had none.
    if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null \
        && [[ -d /run/systemd/system ]]; then
        "${sudo[@]}" systemctl disable --now ssh.service >/dev/null 2>&1 || true
    fi
    # Likewise haproxy: the sandbox and the tests run their own, on ports of their own.
    if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null \
        && [[ -d /run/systemd/system ]]; then
        "${sudo[@]}" systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    fi
fi

# Debian's own Python 3.11 first: it is the interpreter the appliance image ships, so start-up
# figures and behaviour measured here hold there.
python=""
for candidate in /usr/bin/python3.11 python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python=$(command -v "$candidate"); break
    fi
done
[[ -n $python ]] || { echo "setup: error: Python 3.11 not found (Debian 12 ships it as python3)" >&2; exit 1; }

stamp=.venv/.installed-$( (cat pyproject.toml; echo "$python") | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || ! -e $stamp ]]; then
    # Reuse the venv only if it was made with the interpreter chosen above.
    [[ -x .venv/bin/python && "$(readlink -f .venv/bin/python)" == "$(readlink -f "$python")" ]] \
        || { rm -rf .venv; "$python" -m venv .venv; }
    echo "setup: installing Python packages into .venv"
    .venv/bin/pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import appliance, prompt_toolkit, psycopg, cryptography, tabulate, paramiko' \
        || { echo "setup: error: the Python packages did not install" >&2; exit 1; }
    rm -f .venv/.installed-* && touch "$stamp"
fi
