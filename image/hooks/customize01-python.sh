#!/bin/sh
# mmdebstrap customize hook ($1 = the root file system): the product in its own venv.
#
# The wheels (the project's and its dependencies', built by image/build.sh into $IMAGE_WHEELS) are
# installed offline into /opt/appliance/venv. The console scripts get small wrappers that start the
# venv's Python isolated (-I: no PYTHON* variables, no user site, no script directory on sys.path):
#   /usr/local/bin/appliance-shell, appliance-agent, appliance-admin
#   /usr/libexec/appliance/privhelper   (appliance.privileged.server, socket-activated as root;
#                                        not on anyone's PATH)
set -eu
ROOT="$1"
: "${IMAGE_WHEELS:?image/build.sh sets IMAGE_WHEELS}"
VENV=/opt/appliance/venv

rm -rf "$ROOT/tmp/appliance-wheels"
mkdir -p "$ROOT/tmp/appliance-wheels"
cp "$IMAGE_WHEELS"/*.whl "$ROOT/tmp/appliance-wheels/"
chroot "$ROOT" /usr/bin/python3 -m venv "$VENV"
chroot "$ROOT" "$VENV/bin/pip" install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --root-user-action=ignore --find-links /tmp/appliance-wheels appliance
rm -rf "$ROOT/tmp/appliance-wheels"

chroot "$ROOT" "$VENV/bin/python3" -I - <<'PY'
import os
from importlib.metadata import distribution

targets = {
    "appliance-shell": "/usr/local/bin/appliance-shell",
    "appliance-agent": "/usr/local/bin/appliance-agent",
    "appliance-admin": "/usr/local/bin/appliance-admin",
    "appliance-privhelper": "/usr/libexec/appliance/privhelper",
}
scripts = {ep.name: ep for ep in distribution("appliance").entry_points if ep.group == "console_scripts"}
for name, path in targets.items():
    ep = scripts[name]  # KeyError: the wheel lacks a console script the image needs
    module, _, func = ep.value.partition(":")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as out:
        out.write(f"#!/opt/appliance/venv/bin/python3 -I\n"
                  f"# {name}: written by image/hooks/customize01-python.sh from the wheel's entry point.\n"
                  f"import sys\n\nfrom {module} import {func}\n\nsys.exit({func}())\n")
    os.chmod(path, 0o755)
PY
