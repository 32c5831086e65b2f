"""Helpers shared by the test modules, by topic; fixtures live in ``tests/conftest.py``.

- ``events``: webhook and Magnify bodies to send or ingest.
- ``simulators``: what the simulators received and their fault switches, through their ``/_sim`` routes.
- ``store``: the event store and arq's queue seen from outside (ingest, requeue, dead letters, records).
- ``waiting``: polling until a condition holds; event statuses counted.
- ``service``: the web app on a real socket (``Service``) and the settings factory's type.
- ``workers``: arq workers in the test's event loop (a burst, or one in the background).
- ``processes``: real ``magbridge`` and ``arq`` processes with settings in their environment.
- ``redis_server``: the private redis-server the tests run against.
- ``magnify``: the Magnify ingestion tests' settings, pollers and what was ingested.
- ``commands``: command-line entry points run in process.
- ``console``: the operator console over HTTP with a cookie jar, forms sent with their CSRF token.
- ``browser``: a real headless Chromium (selenium, Debian's chromium and chromedriver) for the console.
"""
