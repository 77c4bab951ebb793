"""Multi-worker servers: which worker answered, any worker on request, all of them merged.

- :mod:`.identity`: is this process a worker, and of which server (its parent)?
- :mod:`.rendezvous`: the private 0700 directory of 0600 Unix sockets where siblings meet.
- :mod:`.channel`: each worker's endpoints on its socket (auth bypassed; uid-checked peers).
- :mod:`.membership`: ``WORKERS``, this process's membership (joined through switches.py).
- :mod:`.target`, :mod:`.hop`, :mod:`.fanout`, :mod:`.routing`: ``worker=PID`` and
  ``workers=all``.
"""
