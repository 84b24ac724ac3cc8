"""Test support shared by the test suites (``tests/``) and the benchmarks (``bench/``).

Never imported by the product at run time: it ships inside the package only so that the benchmarks
stand on the product's own modules instead of on ``tests/``. Import the submodules directly; this
package imports none of them, so importing it does nothing.

:mod:`.pghost` (PostgreSQL binaries, the OS user that runs them, base directories, ports, processes),
:mod:`.pgcluster` (real throw-away PostgreSQL 15 clusters and standbys), :mod:`.tcpproxy` (a loopback
TCP forwarder that can be cut), :mod:`.nodes` (app nodes on one machine and a shared database for them),
:mod:`.demolog` (the demo service's shared log, read by an outside observer) and :mod:`.hacluster`
(N nodes with real ``appliance-agent`` processes).
"""
