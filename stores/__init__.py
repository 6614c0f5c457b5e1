"""The stores the job and the command line share: PostgreSQL and Redis.

* ``stores.connections``: connection settings of both (environment variables or AWS Secrets Manager,
  passwords masked), JDBC URL helpers and the one Redis client factory (``RedisSettings.client``).
* ``stores.secrets``: reading a Secrets Manager secret.
* ``stores.postgres``: the tables (names, columns, the sink's upsert statement), connections,
  migrations and resets.
* ``stores.reference``: the reference data in the legacy stores (assets and loaders in PostgreSQL,
  dump regions in Redis): load and seed.
* ``stores.errors``: the errors a user can fix, reported as one line.

Nothing here imports the job, the command line or the Flink adapters (tests/test_architecture.py).
"""
