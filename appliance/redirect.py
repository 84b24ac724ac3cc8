"""``redirect``: move this node from its current database to a shared PostgreSQL, as primary or standby.

Order (``creds-schema.md``, best design (b)): validate -> pre-flight on the target, changing nothing
-> confirm -> stop this node's services -> deployment lock -> deploy, upgrade or verify the schema and
register the node, in one transaction -> write the credential set (the atomic switch of target and
role) -> start services in the new role -> health check.

The plan made by the pre-flight is carried to the execution (it is not made twice). Under the
deployment lock the execution repeats only what another node may have changed meanwhile: the schema's
state, the cluster identity, and (inside the registration) the live primary and the hardware id. A
redirect opens two connections to the target: one for the pre-flight, one for the execution (the
deployment, the registration and the health check); a rollback reuses the second when it can.

Every step that changes something records how to undo it. If a later step fails, or the user presses
Ctrl-C, the undo steps run in reverse (with Ctrl-C ignored while they run), so the node keeps its
old credentials, its old role and its services; the output says what failed, what was rolled back
and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509

from appliance import __version__, credentials
from appliance.clock import Clock
from appliance.config import Config
from appliance.db import schema as S
from appliance.db.connect import connect
from appliance.db.errors import error_from_exception
from appliance.db.target import SYSTEM_CA, DbTarget, Timeouts
from appliance.errors import CommandFailed, Conflict, NotConfigured, Unavailable, UsageError
from appliance.ha.dbmonitor import FollowedFile, target_key
from appliance.ha.dbnodes import Followed, HostState
from appliance.ha.dbwatch import probe_hosts
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.fence import FileFence
from appliance.ha.model import ClusterView, NodeIdentity, Registration
from appliance.ha.pgstore import PgStore
from appliance.ha.session import writer_choice_for
from appliance.ha.settings import Setting
from appliance.ha.timing import trust_s
from appliance.node import ActiveTarget, identity, read_targets, write_targets
from appliance.services import ServiceManager
from appliance.steps import Journal, line, rollback, took

if TYPE_CHECKING:
    import psycopg

    from appliance.db.schema import SchemaState


@dataclass(frozen=True)
class JoinTicket:
    """A join by code (``ha join``): the code is spent in the registration's transaction, and the target
    must hold the cluster the code was issued for."""

    code_id: str
    cluster_id: str
    issuer: str


@dataclass(frozen=True)
class Request:
    hosts: tuple[str, ...]
    ports: tuple[int, ...]
    user: str
    password: str = field(repr=False)
    dbname: str
    prefix: str
    role: str  # primary | standby
    upgrade: bool = False
    sslmode: str = "require"
    sslrootcert: str | None = None  # an absolute path, "system", or None
    join: JoinTicket | None = None


@dataclass(frozen=True)
class Plan:
    """What pre-flight found; everything the execution needs."""

    request: Request
    target: DbTarget
    schema: str
    me: NodeIdentity
    origin: ActiveTarget
    active: ActiveTarget
    state: SchemaState
    server: str
    action: str  # deploy | upgrade | verify
    writer: HostState | None = None  # of a multi-host target: the node written to (by the agent's rule)
    encrypted: bool = True  # the pre-flight's connection used TLS

    def summary(self) -> str:
        role = "primary" if self.request.role == "primary" else "secondary (standby)"
        what = {
            "deploy": f"deploy schema {self.schema} v{_latest()} (the database has none)",
            "upgrade": f"upgrade schema {self.schema} from v{self.state.version} to v{_latest()}",
            "verify": f"use schema {self.schema} v{self.state.version} of cluster {self.state.cluster_id}",
        }[self.action]
        now = "its local database" if self.active.local else f"{self.active.target.describe()}"
        join = self.request.join
        if join is not None:
            lines = [
                f"Node {self.me.name} will join cluster {join.cluster_id} as secondary (standby) with join code "
                f"{join.code_id} of {join.issuer}: it moves from {now} to {self.target.describe()} ({self.server}).",
                f"It will {what}, register this node, store the credentials encrypted and restart its services.",
            ]
        else:
            lines = [
                f"Node {self.me.name} will move from {now} to {self.target.describe()} ({self.server}) as {role}.",
                f"It will {what}, register this node, store the credentials encrypted and restart its services.",
            ]
        warning = tls_warning(self.target, self.encrypted)
        return "\n".join([*lines, warning] if warning else lines)


_FIX = "--db_sslmode verify-full --db_sslrootcert PATH (the CA that signed the server's certificate, or system)"


def tls_warning(target: DbTarget, encrypted: bool) -> str | None:
    """One line saying the server is not verified, and the flags that fix it; None when it is."""
    mode = target.sslmode
    if target.verified:
        return None
    if not encrypted:
        return (f"Warning: the connection is not encrypted and the server is not verified (sslmode={mode}); "
                f"use {_FIX}.")
    if mode == "verify-ca":
        return ("Warning: the server's certificate is checked but not its host name (sslmode=verify-ca); "
                "use --db_sslmode verify-full.")
    return (f"Warning: the connection is encrypted but the server is not verified (sslmode={mode}: any "
            f"certificate is accepted); use {_FIX}.")


def check_tls_request(sslmode: str, sslrootcert: str | None) -> None:
    """Refuse TLS settings that cannot work together, and a CA file that cannot be used.

    :raises UsageError: a combination libpq would refuse or silently ignore.
    :raises NotConfigured: the CA file is missing, unreadable or holds no certificate.
    """
    if sslrootcert == SYSTEM_CA:
        if sslmode != "verify-full":
            raise UsageError(f"--db_sslrootcert system needs --db_sslmode verify-full (not {sslmode})",
                             hint="a public CA vouches for any host name someone controls: only verify-full "
                             "checks that the certificate names this server")
        return
    if sslrootcert is not None:
        if sslmode in ("disable", "allow", "prefer"):
            raise UsageError(f"--db_sslrootcert is used with --db_sslmode verify-full, verify-ca or require "
                             f"(not {sslmode})", hint="add --db_sslmode verify-full")
        _check_ca_file(sslrootcert)
    elif sslmode in ("verify-ca", "verify-full"):
        raise UsageError(f"--db_sslmode {sslmode} needs --db_sslrootcert PATH (the CA that signed the server's "
                         "certificate) or --db_sslrootcert system")


_CA_MAX_BYTES = 1 << 20


def _check_ca_file(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_CA_MAX_BYTES + 1)
    except OSError as exc:
        raise NotConfigured(f"cannot read the CA file {path}: {exc.strerror}",
                            hint="give the path of a PEM file this node's account can read") from None
    try:
        if len(data) > _CA_MAX_BYTES:
            raise ValueError("too large")
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise NotConfigured(f"the CA file {path} holds no PEM certificate",
                            hint="give the CA certificate (-----BEGIN CERTIFICATE-----) that signed the "
                            "server's certificate") from None


def _latest() -> int:
    return S.latest_version()


def _timeouts(config: Config) -> Timeouts:
    return Timeouts(connect_timeout=config.database.connect_timeout_s,
                    statement_timeout=config.database.statement_timeout_s)


def _app_name(me: NodeIdentity) -> str:
    return f"appliance-redirect:{me.name}"[:63]


# --- pre-flight: read only ------------------------------------------------------------------------


def preflight(config: Config, request: Request) -> Plan:
    """Check everything that can be checked without changing anything.

    :raises ApplianceError: the first problem found, with what to do about it.
    """
    check_tls_request(request.sslmode, request.sslrootcert)  # the flags alone: before anything else is read
    if len(request.ports) not in (1, len(request.hosts)):
        raise UsageError(f"--db_port lists {len(request.ports)} ports for {len(request.hosts)} hosts",
                         hint="give one port for all hosts, or one per host in the same order")
    pairs = list(zip(request.hosts, request.ports * len(request.hosts) if len(request.ports) == 1 else request.ports,
                     strict=True))
    if len(set(pairs)) != len(pairs):
        raise UsageError("--db_host/--db_port name the same server twice",
                         hint="list each database server once (the same host may appear with different ports)")
    me = identity(config)
    origin, active = read_targets(config)
    credentials.backend_for(config).check_ready()
    disk = os.statvfs(config.credentials_dir if config.credentials_dir.exists() else config.paths.state_dir)
    free_mb = disk.f_bavail * disk.f_frsize // (1024 * 1024)
    if free_mb < config.database.min_free_disk_mb:
        raise NotConfigured(f"only {free_mb} MiB free under {config.paths.state_dir} "
                            f"(need {config.database.min_free_disk_mb} MiB for the credentials)",
                            hint="free some disk space, then retry")
    schema = S.schema_name(request.prefix)
    target = DbTarget(request.hosts, request.ports, request.user, request.password, request.dbname,
                      request.sslmode, request.sslrootcert)
    writer = _writer(config, target, schema, me)
    single = target if writer is None else target.for_host(*writer.address)
    with connect(single, application_name=_app_name(me), timeouts=_timeouts(config), autocommit=True) as conn:
        encrypted = bool(conn.pgconn.ssl_in_use)
        server = f"PostgreSQL {conn.info.parameter_status('server_version') or '?'} on " \
                 f"{conn.info.host}:{conn.info.port}"
        try:
            state, action = _inspect(conn, request, target, schema)
            if action != "deploy":
                _check_cluster(conn, state, request, active, target)
                _check_primary(PgStore.on_connection(conn, target, schema).snapshot(), state, request, target, me)
        except psycopg_error() as exc:
            raise error_from_exception(exc, target, action="checking the database") from None
    return Plan(request, target, schema, me, origin, active, state, server, action, writer, encrypted)


def _writer(config: Config, target: DbTarget, schema: str, me: NodeIdentity) -> HostState | None:
    """For a multi-host target, the one node to connect to (never libpq's "first read-write host": an old
    primary started again as a primary is read-write too). None for a single host.

    :raises Conflict: the database is split and nothing tells which node is current.
    :raises Unavailable: no read-write node of the target answers.
    """
    if len(target.host_ports()) == 1:
        return None
    hosts = probe_hosts(target, _timeouts(config), _app_name(me))
    choice = writer_choice_for(config, target, schema, hosts)
    if choice.writer is None:
        if choice.alarm:
            raise Conflict(f"{choice.alarm}; nothing was changed",
                           hint="stop the stale database node or rejoin it as a standby, then run redirect again")
        down = "; ".join(f"{h.describe()}: {h.error or 'read-only'}" for h in hosts)
        raise Unavailable(f"no read-write node answers on {target.describe()} ({down})",
                          hint="check the database nodes and their failover, then run redirect again")
    return choice.writer


def psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _inspect(conn: psycopg.Connection[Any], request: Request, target: DbTarget, schema: str) -> tuple[SchemaState, str]:
    """Classify the target's schema and check the privileges the action needs (reads only)."""
    # Reading the state of an existing schema needs USAGE on it and SELECT on its meta table.
    _refuse_missing(request, target, S.missing_read_privileges(conn, schema))
    state = S.read_state(conn, schema)
    action = _decide(state, request, schema, target)
    _refuse_missing(request, target, S.missing_privileges(conn, schema, create=action == "deploy"))
    if action == "upgrade" and not S.owns_schema(conn, schema):
        raise NotConfigured(f"user {request.user} does not own schema {schema} (on {target.describe()}), "
                            "so it cannot upgrade it", hint="redirect with the account that owns the schema")
    return state, action


def _refuse_missing(request: Request, target: DbTarget, missing: list[str]) -> None:
    if missing:
        raise NotConfigured(f"user {request.user} lacks {'; '.join(missing)} (on {target.describe()})",
                            hint="grant it, or use the database owner's account")


def _check_primary(view: ClusterView, state: SchemaState, request: Request, target: DbTarget,
                   me: NodeIdentity) -> None:
    """Refuse early what the registration would refuse: a second primary while one is online; a
    secondary before any primary registered."""
    if request.role == "primary":
        other = view.live_primary(exclude=me.node_id)
        if other is not None:
            raise Conflict(
                f"node {other.name} is already the live primary of cluster {state.cluster_id} "
                f"(heard from {other.heartbeat_age_s or 0:.0f} s ago), on {target.describe()}",
                hint="join this node with --is_secondary_node, or stop the other primary first",
            )
    elif not any(n.role == "primary" for n in view.nodes):
        raise NotConfigured(f"cluster {state.cluster_id} on {target.describe()} has no primary node",
                            hint="redirect the primary node first (--is_primary_node)")


def _decide(state: SchemaState, request: Request, schema: str, target: DbTarget) -> str:
    StateKind = S.StateKind
    kind = state.kind
    if kind is StateKind.ABSENT:
        if request.role != "primary":
            raise NotConfigured(f"schema {schema} is not deployed on {target.describe()}",
                                hint="redirect the primary node first (--is_primary_node); it deploys the schema")
        return "deploy"
    if kind is StateKind.NEWER:
        raise NotConfigured(
            f"the schema v{state.version} (product {state.product_version}) on {target.describe()} is newer than "
            f"this appliance (schema v{_latest()}, product {__version__}); nothing was changed",
            hint="upgrade this appliance first",
        )
    if kind is StateKind.OLDER:
        if request.role != "primary" or not request.upgrade:
            raise NotConfigured(
                f"the schema v{state.version} on {target.describe()} is older than this appliance's v{_latest()}",
                hint="redirect the primary with --upgrade_schema to upgrade it (secondaries follow)",
            )
        return "upgrade"
    if kind in (StateKind.FOREIGN, StateKind.DRIFT):
        raise Conflict(f"{state.describe()}, on {target.describe()}; nothing was changed",
                       hint="use an empty database (or another --db_prefix), or restore the schema as deployed")
    return "verify"


def _check_cluster(conn: psycopg.Connection[Any], state: SchemaState, request: Request, active: ActiveTarget,
                   target: DbTarget) -> None:
    row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    sysid = row[0] if row else None
    if request.role == "standby" and state.system_identifier and sysid != state.system_identifier:
        raise Conflict(
            f"the database server of {target.describe()} (system id {sysid}) is not the one cluster "
            f"{state.cluster_id} was deployed on (system id {state.system_identifier}): it is a copy or another "
            "cluster",
            hint="point the secondary at the same database server (or its replica set) as the primary",
        )
    if request.role == "standby" and not active.local and active.cluster_id != state.cluster_id:
        raise Conflict(
            f"this node belongs to cluster {active.cluster_id}; the target {target.describe()} is cluster "
            f"{state.cluster_id}",
            hint="a node joins one cluster; redirect the primary of that cluster first, or use the same database",
        )


# --- execution ----------------------------------------------------------------------------------


class _Session:
    """The execution's one connection to the target (the deployment, the registration, the health check
    and, if it is still usable, the rollback's undo)."""

    def __init__(self, config: Config, plan: Plan) -> None:
        self.config, self.plan = config, plan
        self._conn: psycopg.Connection[Any] | None = None
        self.writer = plan.writer

    def connection(self) -> psycopg.Connection[Any]:
        from psycopg import pq  # psycopg is loaded by now: the pre-flight connected

        conn = self._conn
        if conn is None or conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            self.close()
            target = self.plan.target
            if self.plan.writer is not None:
                # A new connection: every host asked again, by the same rule (the database may have moved).
                writer = _writer(self.config, target, self.plan.schema, self.plan.me)
                assert writer is not None
                self.writer = writer
                target = target.for_host(*writer.address)
            conn = self._conn = connect(target, application_name=_app_name(self.plan.me),
                                        timeouts=_timeouts(self.config), autocommit=True)
        return conn

    def store(self) -> PgStore:
        return PgStore.on_connection(self.connection(), self.plan.target, self.plan.schema)

    def undo_registration(self, clock: Clock, done: Registration) -> None:
        conn = self.connection()
        with S.deploy_lock(conn, self.plan.schema, wait_s=self.config.database.lock_wait_s, clock=clock), \
                conn.transaction():
            PgStore.on_connection(conn, self.plan.target, self.plan.schema).undo_registration(self.plan.me, done)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass


def execute(config: Config, plan: Plan, *, clock: Clock, services: ServiceManager) -> Iterator[str]:
    """Carry out ``plan``, yielding progress lines; on failure roll back and raise.

    :raises CommandFailed: a step failed; the node was restored (the message says what was done).
    :raises KeyboardInterrupt: Ctrl-C, a hang-up or SIGTERM; the node was restored first.
    """
    journal = Journal()
    session = _Session(config, plan)
    step = "starting"
    started = clock.monotonic()
    try:
        try:
            step = "stopping services"
            t0 = clock.monotonic()
            yield line(clock, "INFO", "Stopping services")
            stopped = services.stop()
            old_role = plan.active.role
            journal.add(f"started the services again as {old_role}", lambda: services.start(old_role))
            yield line(clock, "INFO", f"Stopped {', '.join(stopped) or 'no services'} ({took(clock, t0)})")

            step = "updating the database"
            cluster_id = yield from _database_step(config, plan, clock, journal, session)

            step = "writing the credentials"
            t0 = clock.monotonic()
            new_active = ActiveTarget(plan.target, plan.schema, cluster_id, plan.request.role, local=False)
            yield line(clock, "INFO",
                        f"Storing the credentials for {', '.join(config.credentials.services)} (encrypted)")
            write_targets(config, plan.origin, new_active)
            journal.add("restored the previous credentials and role",
                        lambda: write_targets(config, plan.origin, plan.active))
            yield line(clock, "INFO", f"Credentials stored ({took(clock, t0)})")

            step = "starting services"
            t0 = clock.monotonic()
            yield line(clock, "INFO", f"Starting services as {plan.request.role}")
            journal.add("stopped the services started in the new role", services.stop)
            running = services.start(plan.request.role)
            yield line(clock, "INFO", f"Started {', '.join(running) or 'no services'} ({took(clock, t0)})")

            step = "checking health"
            t0 = clock.monotonic()
            yield line(clock, "INFO", "Checking health")
            _health(config, plan, services, running, session)
            yield line(clock, "INFO", f"Healthy ({took(clock, t0)})")
        except BaseException as exc:
            failure = yield from rollback(clock, journal, step, exc,
                                          "ha join" if plan.request.join is not None else "redirect")
            raise failure from None
    finally:
        session.close()
    role = "primary" if plan.request.role == "primary" else "secondary"
    yield line(clock, "INFO", f"Node {plan.me.name} is now the {role} of cluster {cluster_id} "
                               f"on {plan.target.describe()} (total {took(clock, started)})")


def _database_step(config: Config, plan: Plan, clock: Clock, journal: Journal,
                   session: _Session) -> Generator[str, None, str]:
    """Deploy/upgrade/verify and register, in one transaction under the lock; returns the cluster id."""
    import psycopg  # loaded already by the pre-flight's connection

    t0 = clock.monotonic()
    yield line(clock, "INFO", f"Connecting to {plan.target.describe()}")
    try:
        conn = session.connection()
        for note in S.acquire_deploy_lock(conn, plan.schema, wait_s=config.database.lock_wait_s, clock=clock):
            yield line(clock, "INFO", note[0].upper() + note[1:])
        try:
            registered_at = clock.monotonic()  # anchors the trust window of the lease registration takes
            state = S.read_state(conn, plan.schema)  # again, under the lock: another node may just have acted
            action = _decide(state, plan.request, plan.schema, plan.target)
            store = PgStore.on_connection(conn, plan.target, plan.schema)
            with conn.transaction():
                if action == "deploy":
                    yield line(clock, "INFO", f"Deploying database schema {plan.schema} v{S.latest_version()}")
                    cluster_id = S.deploy(conn, plan.schema, deployed_by=plan.me.name, product_version=__version__)
                    store.seed_settings({Setting.KEEPALIVE: str(config.ha.keepalive_interval_s)})
                elif action == "upgrade":
                    yield line(clock, "INFO", f"Upgrading database schema {plan.schema} from v{state.version}")
                    S.upgrade(conn, plan.schema, state, product_version=__version__)
                    cluster_id = state.cluster_id or ""
                else:
                    yield line(clock, "INFO", f"Verified database schema {plan.schema} v{state.version}")
                    cluster_id = state.cluster_id or ""
                if action != "deploy":
                    _check_cluster(conn, state, plan.request, plan.active, plan.target)
                yield line(clock, "INFO", f"Registering node {plan.me.name} as {plan.request.role}")
                # The registration itself refuses a live primary elsewhere and a twin hardware id.
                done = store.register_node(plan.me, role=plan.request.role, product_version=__version__)
                join = plan.request.join
                if join is not None:
                    store.use_join_code(join.code_id, plan.me.hardware_id, plan.me.name)
                event = NewEvent(EventKind.JOIN, plan.me.name, plan.me.node_id,
                                 {"code_id": join.code_id, "issuer": join.issuer}) if join is not None else \
                    NewEvent(EventKind.REDIRECT, plan.me.name, plan.me.node_id,
                             {"role": plan.request.role, "from": "local database" if plan.active.local
                              else plan.active.target.describe()})
                store.record_events([event], deliver_by=None)

            if plan.request.role == "primary" and done.lease_after.holder == plan.me.node_id:
                # The primary-only services may act until the agent renews the lease it now holds.
                fence = FileFence(config.fence_file)
                fence.grant(registered_at + trust_s(done.keepalive_s), done.lease_after.epoch,
                            done.lease_after.timeline)
                journal.add("closed the fence of the primary-only services", fence.revoke)
            what = "removed this node's registration" if done.previous is None else "restored this node's registration"
            journal.add(what + (" (the deployed, empty schema stays)" if action == "deploy" else ""),
                        lambda: session.undo_registration(clock, done))
            if session.writer is not None:
                # The agent starts from the database node this node registered on (multi-host targets).
                w = session.writer
                FollowedFile(config.paths.state_dir).save(target_key(plan.target, plan.schema),
                                                          Followed(w.host, w.port, w.timeline, w.system_id))
        finally:
            S.release_deploy_lock(conn, plan.schema)
    except psycopg.Error as exc:
        raise error_from_exception(exc, plan.target, action="updating the database") from None
    yield line(clock, "INFO", f"Database ready ({took(clock, t0)})")
    return cluster_id


def _health(config: Config, plan: Plan, services: ServiceManager, started: list[str], session: _Session) -> None:
    _origin, active = read_targets(config)  # what the services will read, decrypted from disk
    if active.target != plan.target or active.role != plan.request.role or active.schema != plan.schema:
        raise CommandFailed("after the switch, the stored credentials do not name the new target and role")
    mine = session.store().snapshot().node(plan.me.node_id)
    if mine is None or mine.role != plan.request.role:
        raise CommandFailed(f"after the switch, this node is not registered as {plan.request.role}")
    down = sorted(set(started) - set(services.running()))
    if down:
        raise CommandFailed(f"services did not stay up: {', '.join(down)}",
                            hint=f"see their logs under {config.paths.state_dir / 'log'}")


def plan_for(config: Config, args: Any) -> Plan:
    """Build the request from parsed ``redirect`` arguments and run pre-flight."""
    request = Request(
        hosts=tuple(args["db_host"]), ports=tuple(args["db_port"]), user=args["db_user"],
        password=args["db_pass"], dbname=args["db_name"] or config.database.name,
        prefix=config.database.schema_prefix if args["db_prefix"] is None else args["db_prefix"],
        role="primary" if args["is_primary_node"] else "standby", upgrade=bool(args["upgrade_schema"]),
        sslmode=args.get("db_sslmode") or config.database.sslmode, sslrootcert=args.get("db_sslrootcert"),
    )
    return preflight(config, request)

