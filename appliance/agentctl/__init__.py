"""The agent's control socket: how the login shell asks the local agent for what needs the database or
the credentials, so that the login user holds neither.

* :mod:`.protocol`: the wire format (one JSON object per line, bounded), the verbs, the socket address.
* :mod:`.client`: the shell's side (light: no database, no cryptography).
* :mod:`.server`: the agent's side: one thread accepting, SO_PEERCRED checked against ``[agent]
  control_users``, a few bounded worker threads.
* :mod:`.runner`: what a request runs: a command of the closed table declared ``via_agent``, parsed
  and checked again here, run by its own handler (the code the shell runs without a socket).
"""
