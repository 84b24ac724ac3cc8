"""Where this node keeps its DB credentials: the backend seam, and the factory choosing a backend.

Every user of the credentials (:mod:`appliance.node`, ``redirect``'s pre-flight, ``system
rotate-key``, node initialisation, the agent noticing a redirect) goes through a
:class:`CredentialBackend` from :func:`backend_for`; none of them knows how or where the set is
stored. Adding a backend means one module here plus one branch in :func:`backend_for` (and its name
in the ``[credentials] backend`` choices of :mod:`appliance.config`).

Backends:

* ``file`` (:mod:`.file`): the encrypted files of :mod:`appliance.secrets` under
  ``[credentials] dir``, with the master key in ``[credentials] key_dir``.
* :mod:`.memory`: the same contract in memory, for unit tests (not selectable in the config).

Importing this package is cheap: a backend's modules (and ``cryptography``) load when
:func:`backend_for` builds one.
"""

from __future__ import annotations

from appliance.config import Config
from appliance.credentials.backend import CredentialBackend, KeyRotation
from appliance.errors import ConfigError

__all__ = ["CredentialBackend", "KeyRotation", "backend_for"]


def backend_for(config: Config) -> CredentialBackend:
    """The backend ``[credentials] backend`` names. Builds it only: no file is read or created.

    :raises ConfigError: an unknown backend name (only possible for a config built in code, since
        the loader validates the name).
    """
    choice = config.credentials.backend
    if choice == "file":
        # Imported here, not at the top: the file store loads `cryptography`, and the shell's start-up
        # (`appliance-shell -c "system get hostname"`) must not pay for it.
        from appliance.credentials.file import FileCredentialBackend

        return FileCredentialBackend(config.credentials_dir, config.key_dir)
    raise ConfigError(f"unknown credential backend {choice!r}", hint='set [credentials] backend = "file"')
