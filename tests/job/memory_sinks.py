"""An in-memory sink set for pipeline tests that need no PostgreSQL: what the pipeline would write,
per sink kind, collected back into the test (``job.pipeline.assemble(settings, MemorySinks, ...)``)."""

from __future__ import annotations

from typing import Any


class MemorySinks:
    """job.sinks.SinkSet's interface (``t_env``, ``add``, ``add_table``, ``attach``); ``collect()`` runs
    the job and returns ``{kind: [row dict, ...]}`` in the order the rows were written."""

    def __init__(self, env: Any) -> None:
        from pyflink.table import StreamTableEnvironment

        self.env = env
        self.t_env = StreamTableEnvironment.create(env)
        self._streams: list[Any] = []
        self._collected: Any = None

    def add(self, kind: str, stream: Any) -> None:
        """Collect a DataStream of ROW_NAMED rows as sink ``kind``."""
        self.add_table(kind, self.t_env.from_data_stream(stream))

    def add_table(self, kind: str, table: Any) -> None:
        """Collect a Table's rows as sink ``kind``."""
        from pyflink.common import Types

        names = tuple(table.get_schema().get_field_names())
        stream = self.t_env.to_data_stream(table)
        self._streams.append(stream.map(lambda row, k=kind, n=names: (k, dict(zip(n, row, strict=True))),
                                        output_type=Types.PICKLED_BYTE_ARRAY()).name(f"collect {kind}"))  # fmt: skip

    def attach(self) -> None:
        """Join every collected stream into one (call once, as SinkSet.attach)."""
        first, *rest = self._streams
        self._collected = first.union(*rest) if rest else first

    def collect(self) -> dict[str, list[dict[str, Any]]]:
        """Run the job to its end; the rows per sink kind."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self._collected.execute_and_collect("asset-cycle-memory-sinks") as results:
            for kind, row in results:
                out.setdefault(kind, []).append(row)
        return out
