"""An in-memory sink set for pipeline tests that need no PostgreSQL: what the pipeline would write,
per sink kind, collected back into the test (``job.pipeline.assemble(settings, MemorySinks, ...)``)."""

from __future__ import annotations

from typing import Any

from job.sinks import check_row_type


class MemorySinks:
    """job.sinks.SinkSet's interface (``add``, ``attach``); ``collect()`` runs the job and returns
    ``{kind: [row dict, ...]}`` (udfs.rows field names) in the order the rows were written."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self._streams: list[Any] = []
        self._collected: Any = None

    def add(self, kind: str, stream: Any) -> None:
        """Collect a DataStream of ROW_NAMED rows as sink ``kind`` (checked as SinkSet.add does)."""
        from pyflink.common import Types

        check_row_type(kind, stream._j_data_stream.getType().toString())
        row_type = stream.get_type()
        names = tuple(row_type.get_field_names())
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
