"""The privileged helper: the one root program the appliance's users can ask for something.

:mod:`~appliance.privileged.server` is that program (``appliance-privhelper``, installed as
``/usr/libexec/appliance/privhelper`` and socket-activated on the image);
:mod:`~appliance.privileged.client` is how the shell and the agent ask it, over its socket;
:mod:`~appliance.privileged.polkit` writes the polkit rules for what systemd's own services do
instead. :data:`PROG` is the one thing client and server share: the name the helper puts before its
log and error lines. It lives here so that the client, which every shell start loads, does not load
the server program.
"""

PROG = "privhelper"
