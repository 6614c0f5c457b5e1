"""Build the Amazon Managed Service for Apache Flink (MSF) application zip.

Zip layout (all paths relative to the zip root)::

    main.py                     MSF entry point (source: deploy/msf_main.py)
    build-info.json             what went in: version, jars + sha256, vendored wheels
    lib/asset-cycle-flink.jar   the job's uber-jar (deploy.jars): Kinesis source, file format,
                                JDBC core + postgres, PostgreSQL driver
    lib/python/                 ONE directory on the PYTHONPATH of the client and of the UDF workers
        job/ cli/ stores/ report/ udfs/      the project's packages
        state_machine/ workbench/ deploy/
        sql/*.sql                            the project's SQL files
        shapely/ pyproj/ psycopg2/ ...       vendored manylinux x86_64 / cp312 wheels, unpacked

MSF run options (property group ``kinesis.analytics.flink.run.options``)::

    python  = main.py
    jarfile = lib/asset-cycle-flink.jar
    pyFiles = lib/python/

Why the project's packages live in ``lib/python`` and not at the zip root: Flink puts a
``pyFiles`` *directory* itself on the UDF workers' PYTHONPATH, so only a directory that *contains*
``job/`` makes ``import job`` work inside the Python workers (the zip root cannot be listed).

The five VENDORED_REQUIREMENTS are always vendored (lib/python comes first on the path, so our
pins win). Their dependencies are vendored only when the MSF runtime does not already provide
them (apache-flink's closure, e.g. numpy, pandas, pyarrow, requests/certifi, and boto3's): a
second numpy on the path would shadow the runtime's and break PyFlink.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy import jars

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

MSF_PYTHON_VERSION = "3.12"
MSF_PLATFORM = "manylinux2014_x86_64"
MSF_ABI = "cp312"

ZIP_JAR_PATH = "lib/asset-cycle-flink.jar"
ZIP_PYTHON_DIR = "lib/python"
ZIP_ENTRY_POINT = "main.py"

RUN_OPTIONS_GROUP = "kinesis.analytics.flink.run.options"
RUN_OPTIONS: dict[str, str] = {
    "python": ZIP_ENTRY_POINT,
    "jarfile": ZIP_JAR_PATH,
    "pyFiles": f"{ZIP_PYTHON_DIR}/",
}

PROJECT_PACKAGES = ("job", "cli", "stores", "report", "web", "udfs", "state_machine", "workbench", "deploy")
"""Every package of the project: the job's own, and those the command line imports (``web``'s settings for
``asset-cycle serve``'s options; its server never runs on MSF and its page's files are not copied)."""
PACKAGE_DATA_SUFFIXES = frozenset({".py", ".sql", ".json", ".yaml", ".yml"})
"""Files copied from the project's packages (mirrors pyproject's package-data)."""

VENDORED_REQUIREMENTS = ("shapely", "pyproj", "psycopg2-binary", "redis", "orjson")
"""Distributions vendored into the zip; their version specifiers come from pyproject.toml."""

RUNTIME_PROVIDED_BASE = frozenset(
    {
        "apache-flink", "apache-flink-libraries", "apache-beam", "py4j", "pemja", "cloudpickle",
        "numpy", "pandas", "pyarrow", "protobuf", "python-dateutil", "six", "pytz", "avro", "fastavro",
        "requests", "urllib3", "idna", "certifi", "charset-normalizer", "httplib2", "ruamel-yaml",
        "boto3", "botocore", "s3transfer", "jmespath",
    }
)  # fmt: skip
"""Distributions the MSF Python runtime brings (PyFlink's closure and boto3's), never vendored."""

ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)
"""Fixed timestamp of every zip entry, so equal inputs give a byte-identical zip."""


class PackageError(Exception):
    """The application zip cannot be built (missing jar, failed wheel download, ...)."""


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- requirements


def pinned_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> dict[str, str]:
    """All of pyproject's ``[project] dependencies`` as {normalised name: requirement string}."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for req in data["project"]["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            out[normalize_name(match.group(1))] = req.strip()
    return out


def vendored_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """Requirement strings of VENDORED_REQUIREMENTS with pyproject's version specifiers."""
    pins = pinned_requirements(pyproject)
    return [pins.get(normalize_name(name), name) for name in VENDORED_REQUIREMENTS]


MSF_MARKER_ENV = {
    "python_version": MSF_PYTHON_VERSION,
    "python_full_version": f"{MSF_PYTHON_VERSION}.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}
"""Environment markers of the MSF Python runtime (to evaluate dependency markers)."""


def _requirement_names(dist: str) -> list[str]:
    """Names of ``dist``'s installed requirements that apply on the MSF runtime (no extras)."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    try:  # deferred: optional (pip's packaging is nearly always installed)
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging is nearly always there
        Requirement = None  # type: ignore[assignment,misc]  # noqa: N806
    names = []
    for req in requires:
        if Requirement is not None:
            try:
                parsed = Requirement(req)
            except InvalidRequirement:
                continue
            if parsed.marker is not None and not parsed.marker.evaluate(MSF_MARKER_ENV):
                continue
            names.append(normalize_name(parsed.name))
        elif not re.search(r"extra\s*==", req):
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if match:
                names.append(normalize_name(match.group(1)))
    return names


def runtime_provided() -> frozenset[str]:
    """RUNTIME_PROVIDED_BASE plus the installed closure of apache-flink and boto3 (if installed).

    The local venv pins the same apache-flink version as the MSF runtime, so its dependency
    closure is what the runtime has importable.
    """
    explored: set[str] = set()
    todo = ["apache-flink", "boto3"]
    while todo:
        name = todo.pop()
        if name in explored:
            continue
        explored.add(name)
        todo.extend(dep for dep in _requirement_names(name) if dep not in explored)
    return frozenset(RUNTIME_PROVIDED_BASE | explored)


# --------------------------------------------------------------------------- wheels


def wheel_cache_key(requirements: Sequence[str], platform: str, python_version: str) -> str:
    """Short stable key of a wheel set: same inputs, same cache directory."""
    blob = json.dumps([sorted(requirements), platform, python_version, MSF_ABI])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def download_wheels(
    requirements: Sequence[str],
    cache_root: Path,
    platform: str = MSF_PLATFORM,
    python_version: str = MSF_PYTHON_VERSION,
) -> Path:
    """Download the MSF-runtime wheels of ``requirements`` (with dependencies) into a cached dir.

    The directory is keyed by the requirement set; a completed download is reused without any
    network access. Returns the directory holding the ``.whl`` files.
    """
    target = cache_root / f"wheels-{wheel_cache_key(requirements, platform, python_version)}"
    marker = target / ".complete"
    if marker.is_file():
        log.info("using cached wheels in %s", target)
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--only-binary=:all:", "--platform", platform, "--python-version", python_version,
        "--implementation", "cp", "--abi", MSF_ABI, "--dest", str(target), *requirements,
    ]  # fmt: skip
    log.info("downloading wheels: %s", " ".join(requirements))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PackageError(f"pip download of {', '.join(requirements)} failed: {' | '.join(tail)}")
    marker.write_text("\n".join(sorted(p.name for p in target.glob("*.whl"))) + "\n")
    return target


def wheel_distribution(wheel: Path) -> str:
    """Normalised distribution name of a wheel file name (``name-version-...whl``)."""
    return normalize_name(wheel.name.split("-", 1)[0])


def select_wheels(wheel_dir: Path, provided: Iterable[str]) -> list[Path]:
    """The wheels in ``wheel_dir`` to vendor (sorted).

    VENDORED_REQUIREMENTS are always vendored (our pinned versions come first on the path);
    their dependencies only when the runtime does not already provide them.
    """
    keep = {normalize_name(n) for n in VENDORED_REQUIREMENTS}
    provided = set(provided) - keep
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise PackageError(f"no .whl files in {wheel_dir}")
    return [w for w in wheels if wheel_distribution(w) not in provided]


def _wheel_member_target(name: str) -> str | None:
    """Where a wheel member goes below lib/python (``None`` = dropped)."""
    first, _, rest = name.partition("/")
    if first.endswith(".data"):
        kind, _, inner = rest.partition("/")
        return inner if kind in ("purelib", "platlib") and inner else None
    return name


# --------------------------------------------------------------------------- zip


def _zinfo(name: str, external_attr: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = external_attr or (0o644 << 16)
    return info


def project_files(root: Path = PROJECT_ROOT) -> list[tuple[Path, str]]:
    """(source file, path inside lib/python) of the project's packages and sql/*.sql."""
    out: list[tuple[Path, str]] = []
    for package in PROJECT_PACKAGES:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise PackageError(f"project package {package}/ not found under {root}")
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.suffix in PACKAGE_DATA_SUFFIXES and "__pycache__" not in path.parts:
                out.append((path, path.relative_to(root).as_posix()))
    out.extend((p, f"sql/{p.name}") for p in sorted((root / "sql").glob("*.sql")))
    return out


@dataclass
class PackageResult:
    """What ``build_package`` produced."""

    zip_path: Path
    jar: str
    wheels: list[str]
    skipped_wheels: list[str]
    entries: int


def build_package(
    output: Path,
    *,
    root: Path = PROJECT_ROOT,
    wheel_dir: Path | None = None,
    wheel_cache: Path | None = None,
    jar_path: Path | None = None,
    jar_dir: Path | None = None,
) -> PackageResult:
    """Build the MSF application zip at ``output`` (written atomically: no partial zip on error).

    ``wheel_dir`` uses ready wheels (no download; tests pass a dir of fake wheels); otherwise the
    MSF wheels are downloaded once into ``wheel_cache`` (default ``build/msf``) and reused.
    ``jar_path`` is the job's uber-jar (default: the one ``make setup`` built into ``jar_dir``,
    ``.jars/``); it must hold every class of ``deploy.jars.REQUIRED_CLASSES``.
    """
    try:
        jar = Path(jar_path) if jar_path is not None else jars.require_jar(jar_dir)
        jars.verify_jar(jar)
    except jars.JarError as exc:
        raise PackageError(str(exc)) from exc

    if wheel_dir is None:
        requirements = vendored_requirements(root / "pyproject.toml")
        wheel_dir = download_wheels(requirements, wheel_cache or root / "build" / "msf")
    provided = runtime_provided()
    wheels = select_wheels(wheel_dir, provided)
    skipped = sorted({w.name for w in wheel_dir.glob("*.whl")} - {w.name for w in wheels})
    have = {wheel_distribution(w) for w in wheels}
    absent = [n for n in VENDORED_REQUIREMENTS if normalize_name(n) not in have]
    if absent:
        raise PackageError(f"no wheel for {', '.join(absent)} in {wheel_dir}")

    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asset-cycle-pkg-") as tmp:
        partial = Path(tmp) / "app.zip"
        names: set[str] = set()
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:

            def add(name: str, data: bytes, attr: int = 0) -> None:
                if name in names:
                    raise PackageError(
                        f"two files for {name} in the zip (vendored wheel clashes with project?)"
                    )
                names.add(name)
                zf.writestr(_zinfo(name, attr), data)

            add(ZIP_ENTRY_POINT, (root / "deploy" / "msf_main.py").read_bytes())
            add(ZIP_JAR_PATH, jar.read_bytes())
            for src, rel in project_files(root):
                add(f"{ZIP_PYTHON_DIR}/{rel}", src.read_bytes())
            for wheel in wheels:
                try:
                    with zipfile.ZipFile(wheel) as wz:
                        for info in wz.infolist():
                            target = None if info.is_dir() else _wheel_member_target(info.filename)
                            if target:
                                add(f"{ZIP_PYTHON_DIR}/{target}", wz.read(info), info.external_attr)
                except zipfile.BadZipFile as exc:
                    raise PackageError(f"{wheel.name} is not a valid wheel: {exc}") from exc
            info = {
                "version": _project_version(root),
                "run_options": {RUN_OPTIONS_GROUP: RUN_OPTIONS},
                "jar": {"file": jar.name, "sha256": _sha256(jar)},
                "wheels": [w.name for w in wheels],
                "python": MSF_PYTHON_VERSION,
                "platform": MSF_PLATFORM,
            }
            add("build-info.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
        shutil.move(str(partial), output)
    return PackageResult(
        zip_path=output,
        jar=jar.name,
        wheels=[w.name for w in wheels],
        skipped_wheels=skipped,
        entries=len(names),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _project_version(root: Path) -> str:
    try:
        return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"
