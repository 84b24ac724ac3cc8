"""Database access for the appliance.

* :mod:`appliance.db.target`: where and as whom to connect (:class:`~appliance.db.target.DbTarget`),
  with which :class:`~appliance.db.target.Timeouts`; plain values.
* :mod:`appliance.db.connect`: the only place that opens a PostgreSQL connection
  (:func:`~appliance.db.connect.connect`, :func:`~appliance.db.connect.probe`).
* :mod:`appliance.db.errors`: every failure as one :class:`~appliance.db.errors.DbError`, which is
  what callers catch.
* :mod:`appliance.db.schema`: the appliance's versioned schema (deployment, upgrades, the deploy lock).

Importing this package, or any of these modules, does not import psycopg.
"""
