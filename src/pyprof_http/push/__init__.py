"""Continuous profiles pushed to Grafana Pyroscope (``push_url``), off unless asked for.

``labels`` names the series, ``request`` encodes Pyroscope's Connect ``PushRequest`` and the
legacy ``/ingest`` form, ``client`` sends them with the standard library, ``sources`` collects
one batch of profiles, and ``pusher`` runs the background thread that ties them together. The
lifecycle starts it at startup through :meth:`pyprof_http.switches.Claims.push`.
"""
