"""The privileged helper: the one program the unprivileged appliance account may run as root.

:mod:`~appliance.privileged.server` is that program (``appliance-privhelper``, installed as
``/usr/libexec/appliance/privhelper``); :mod:`~appliance.privileged.client` is how the shell and the
agent ask it for something, through ``sudo -n``. :data:`PROG` is the one thing both sides share: the
name the helper puts before every line it writes on stderr, which the client strips from the reason.
It lives here so that the client, which every shell start loads, does not load the server program.
"""

PROG = "privhelper"
