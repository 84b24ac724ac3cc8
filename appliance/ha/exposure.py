"""What the agent shows outside its loop: the board (:mod:`appliance.ha.board`) behind the health endpoint
and the metrics, and the cluster's virtual IP handed to the VIP holder (:mod:`appliance.ha.vip`).

The agent calls :meth:`Exposure.fence` when it builds a runtime, :meth:`Exposure.probed` with every
round of DB probes and :meth:`Exposure.tick` after every tick; nothing here ever blocks the loop (the
endpoint runs on its own thread and reads only immutable records). An endpoint that cannot be bound
(port taken) is logged and tried again every ``REBIND_S``: the HA loop never depends on it.
"""

from __future__ import annotations

import logging
import time

from appliance.config import Config
from appliance.ha.board import BoardFence, Published
from appliance.ha.dbnodes import HostState
from appliance.ha.health import start_endpoint
from appliance.ha.metrics import Metrics
from appliance.ha.model import Action, Decision, NodeStatus
from appliance.ha.runtime import Fence, Runtime
from appliance.ha.status import status_of
from appliance.ha.vip import write_wanted
from appliance.net.httpd import HttpServer

logger = logging.getLogger("appliance.agent")

REBIND_S = 10.0


class Exposure:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.board = self.metrics.board
        self.endpoint: HttpServer | None = None
        self.failovers = 0
        self.db_hosts: tuple[HostState, ...] = ()
        self._next_bind = 0.0
        self._bind_error: str | None = None

    def fence(self, inner: Fence, runtime: Runtime) -> BoardFence:
        """The fence ``runtime`` grants and revokes, told to the board at the same instant."""
        runtime.on_renewal = self.board.observe_renewal
        return BoardFence(inner, self.board)

    def probed(self, hosts: list[HostState]) -> list[HostState]:
        self.db_hosts = tuple(hosts)
        return hosts

    def reconfigure(self, config: Config) -> None:
        """After a reload: a changed ``[health]`` section rebinds the endpoint at the next tick."""
        if config.health != self.config.health and self.endpoint is not None:
            self.endpoint.close()
            self.endpoint, self._next_bind = None, 0.0
        self.config = config

    def tick(self, runtime: Runtime, decision: Decision) -> None:
        if decision.action is Action.ACQUIRE:
            self.failovers += 1  # _acquire reports ACQUIRE only when it took the lease and acts
        view = runtime.view
        me = view.node(runtime.node_id) if view else None
        state = NodeStatus.WAIT if view is None or me is None else status_of(view, me, acting=runtime.local.acting)
        self.board.publish(Published(
            node_id=runtime.node_id, name=me.name if me else runtime.node_id, state=state.value,
            acting=runtime.local.acting, epoch=runtime.local.epoch, keepalive_s=runtime.keepalive_s, view=view,
            db_hosts=self.db_hosts, ticked_at=time.monotonic(), failovers=self.failovers,
        ))
        if view is not None:
            try:
                write_wanted(self.config, view.vip)
            except OSError as exc:
                logger.warning("cannot hand the virtual IP to its holder: %s", exc.strerror)
        self._serve()

    def _serve(self) -> None:
        listen = self.config.health.listen
        if not listen or self.endpoint is not None or time.monotonic() < self._next_bind:
            return
        try:
            self.endpoint = start_endpoint(self.config.health, self.metrics)
        except OSError as exc:
            self._next_bind = time.monotonic() + REBIND_S
            if exc.strerror != self._bind_error:
                logger.error("health endpoint: cannot listen on %s: %s (trying again every %.0f s)", listen,
                             exc.strerror, REBIND_S)
            self._bind_error = exc.strerror
            return
        self._bind_error = None
        logger.info("health endpoint listening on %s", listen)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
