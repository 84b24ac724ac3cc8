"""What a handler receives besides its arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.config import Config
from appliance.shell.env import Env
from appliance.shell.spec import Registry


@dataclass
class Context:
    """The node's configuration, the I/O environment and the shell session's state.

    :param interactive: the command runs in the interactive shell (not ``-c`` or batch).
    :param history: the session's history entries (masked), newest last, for ``history``.
    :param logout: set by ``exit`` to end the session after the command.
    """

    config: Config
    env: Env
    registry: Registry
    interactive: bool = False
    history: Callable[[], list[str]] = field(default=lambda: [])
    logout: bool = False
