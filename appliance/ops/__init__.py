"""Day-1 and day-2 operations of one node: network, time, power, diagnostics, logs, support, backup.

The ``commands/`` modules of those families call the functions here. The reading modules
(:mod:`~appliance.ops.netinfo`, :mod:`~appliance.ops.timeinfo`, :mod:`~appliance.ops.sysinfo`,
:mod:`~appliance.ops.logs`...) run as the login user and change nothing; what changes the running
system is done as root by the privileged helper (:mod:`appliance.privileged.server`), which imports
only the root-side modules (:mod:`~appliance.ops.netconf`, :mod:`~appliance.ops.netapply`,
:mod:`~appliance.ops.timeset`) and re-checks every argument with the rules they share.
"""
