"""Test support shared by the test suites (``tests/``) and the benchmarks (``bench/``).

Never imported by the product at run time: it ships inside the package only so that the benchmarks
stand on the product's own modules instead of on ``tests/``. Import the submodules directly; this
package imports none of them, so importing it does nothing.

:mod:`.pghost` (PostgreSQL binaries, the OS user that runs them, base directories, ports, processes)
and :mod:`.pgcluster` (real throw-away PostgreSQL 15 clusters and standbys).
"""
