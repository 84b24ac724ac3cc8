"""The HA core shared by the shell and ``appliance-agent``.

:mod:`.model` (snapshot, local state, decisions), :mod:`.store` (the store contract), :mod:`.decide`
(the pure decision), :mod:`.runtime` (one node's loop body), stores :mod:`.memstore` and
:mod:`.pgstore`.
"""
