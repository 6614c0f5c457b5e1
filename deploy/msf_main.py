"""MSF entry point: packaged as ``main.py`` at the root of the application zip.

Managed Service for Apache Flink runs ``python main.py`` (run option ``python=main.py``) from the
unpacked zip. This script puts ``lib/python`` (the project's packages and the vendored wheels) at
the front of ``sys.path`` and hands over to ``job.main.main()``, which reads the application
properties from ``/etc/flink/application_properties.json``.

The UDF workers get the same directory through the run option ``pyFiles=lib/python/``.
Keep this file free of third-party imports: nothing is importable before the path is set.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_LIB_DIRS = (os.path.join(HERE, "lib", "python"),)


def setup_path(dirs: tuple[str, ...] = PYTHON_LIB_DIRS) -> list[str]:
    """Prepend the existing ``dirs`` to ``sys.path`` (once each); return those added."""
    added = []
    for path in reversed(dirs):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
            added.append(path)
    return added


def run() -> int | None:
    """Set up ``sys.path`` and run the job's entry point."""
    setup_path()
    from job.main import main as job_main  # deferred: importable only once the path is set up

    return job_main()


if __name__ == "__main__":
    result = run()
    sys.exit(result if isinstance(result, int) else 0)
