"""The `asset-cycle` command line and what only local runs need.

* ``cli.main``: the console script (one sub-command per module of ``cli.commands``).
* ``cli.run_plan``: ``asset-cycle run``'s options resolved into the job's AppSettings (source, schema,
  Redis prefix, checkpoints, ports, demo defaults) by small resolvers.
* ``cli.local_run``: the run on the local minicluster: local PostgreSQL/Redis, tables, seeding, then
  the job built by job.main.build_job (the function the job's own entry point runs), followed by
  ``cli.console``.
* ``cli.local_services``: the local PostgreSQL and Redis servers and free local ports.
* ``cli.checkpoints``: the checkpoints local runs keep on disk (``--resume``).
* ``cli.options``: the PostgreSQL/Redis/table options shared by the commands.
"""
