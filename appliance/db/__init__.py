"""Database access for the appliance.

:mod:`appliance.db.connect` is the only place that opens a PostgreSQL connection; everything else
goes through :func:`connect` / :func:`probe` and catches :class:`DbError`. Importing this package does
not import psycopg.
"""

from appliance.db.connect import (
    MIN_SERVER_VERSION,
    DbError,
    DbErrorKind,
    DbTarget,
    HostFailure,
    ServerInfo,
    Timeouts,
    classify_text,
    connect,
    error_from_exception,
    probe,
)

__all__ = [
    "MIN_SERVER_VERSION",
    "DbError",
    "DbErrorKind",
    "DbTarget",
    "HostFailure",
    "ServerInfo",
    "Timeouts",
    "classify_text",
    "connect",
    "error_from_exception",
    "probe",
]
