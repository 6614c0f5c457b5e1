"""``asset-cycle serve``: the live operations view, a read-only HTTP API and one web page over the job's
live tables (fleet positions, in-progress and closed cycles, loaders, alerts, hourly KPIs).

* ``web.db``: a small pool of read-only PostgreSQL connections (SELECT only, statement timeout); a
  database that is down is ``DatabaseDown`` (HTTP 503), and the pool recovers when it is back.
* ``web.queries``: every SQL statement the server runs, static text with parameters.
* ``web.geometry``: each site's map (dump regions from Redis, loaders from PostgreSQL), cached briefly.
* ``web.app``: the FastAPI application (routes, OpenAPI schema, errors, security headers, bearer token).
* ``web.server``: serving it with uvicorn, in the foreground (``asset-cycle serve``) or beside a local
  job run (``asset-cycle run --serve``).
"""
