"""Pinned manifest of the runtime jars and a fetcher that verifies every byte it hands out.

Jars and where they come from:

* ``flink-connector-jdbc-core`` / ``flink-connector-jdbc-postgres`` 4.0.0-2.0 and the PostgreSQL
  JDBC driver 42.7.3 are taken from the PyPI wheel ``shigawire-apache-flink-libraries==2.0.0.post1``
  (``pyflink/lib/*.jar``). The wheel is fetched with ``pip download --no-deps`` into a cache
  directory (never installed: it would overwrite PyFlink's own jars); only these three members are
  extracted and each is checked against the sha256 pinned below (computed from the wheel, whose own
  sha256 is pinned too).
* ``flink-sql-connector-aws-kinesis-streams`` 6.0.0-2.0: the shaded ("sql") variant of
  ``org.apache.flink:flink-connector-aws-kinesis-streams``. The plain artifact does not bundle
  ``flink-connector-aws-base`` nor the AWS SDK, which a PyFlink job cannot pull in through Maven;
  from connector 5.x on the sql jar also contains the FLIP-27 ``KinesisStreamsSource`` (class name
  unchanged, only the dependencies are relocated). It comes from a Maven repository (default
  Maven Central, configurable) or a local directory. No published sha256 of this artifact could be
  found in public sources, so it is verified trust-on-first-use: the jar must match the ``.sha1``
  file Maven publishes next to it, and its sha256 is then recorded in ``deploy/jars.lock.json``;
  every later fetch must match that recorded sha256 exactly. Commit the lock file after the first
  fetch.

Usage: ``python -m deploy.jars fetch [--dest .jars] [--kinesis | --kinesis-optional]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JAR_DIR = PROJECT_ROOT / ".jars"
LOCK_FILE = Path(__file__).with_name("jars.lock.json")
DEFAULT_MAVEN_BASE_URL = "https://repo1.maven.org/maven2"
MAVEN_URL_ENV = "ASSET_CYCLE_MAVEN_BASE_URL"
CACHE_DIR_ENV = "ASSET_CYCLE_CACHE_DIR"
HTTP_TIMEOUT_S = 30.0

WHEEL_REQUIREMENT = "shigawire-apache-flink-libraries==2.0.0.post1"
WHEEL_FILENAME = "shigawire_apache_flink_libraries-2.0.0.post1-py3-none-any.whl"
WHEEL_SHA256 = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"

KINESIS_JAR = "flink-sql-connector-aws-kinesis-streams"
JDBC_JARS = ("flink-connector-jdbc-core", "flink-connector-jdbc-postgres", "postgresql")


class JarError(Exception):
    """A jar is missing, cannot be fetched or fails its checksum (message names jar and place)."""


@dataclass(frozen=True, slots=True)
class JarSpec:
    """One pinned jar: where it comes from and what it must hash to."""

    name: str
    filename: str
    version: str
    sha256: str | None
    origin: str  # "wheel" or "maven"
    wheel_member: str | None = None
    maven_group: str | None = None
    maven_artifact: str | None = None

    def maven_path(self) -> str:
        """Path of the jar below a Maven repository base URL."""
        assert self.maven_group and self.maven_artifact
        return f"{self.maven_group.replace('.', '/')}/{self.maven_artifact}/{self.version}/{self.filename}"


_BASE_JARS: tuple[JarSpec, ...] = (
    JarSpec(
        name="flink-connector-jdbc-core",
        filename="flink-connector-jdbc-core-4.0.0-2.0.jar",
        version="4.0.0-2.0",
        sha256="ccb9691bf1d0f97574ae768e1bef05a39c06d7f7b13996e9d485fbdd69dcbfec",
        origin="wheel",
        wheel_member="pyflink/lib/flink-connector-jdbc-core.jar",
    ),
    JarSpec(
        name="flink-connector-jdbc-postgres",
        filename="flink-connector-jdbc-postgres-4.0.0-2.0.jar",
        version="4.0.0-2.0",
        sha256="b59c29dc65cafe8ae398e69072b9f6022f4a978a09002fd06a05a1a8dd3348d6",
        origin="wheel",
        wheel_member="pyflink/lib/flink-connector-jdbc-postgres.jar",
    ),
    JarSpec(
        name="postgresql",
        filename="postgresql-42.7.3.jar",
        version="42.7.3",
        sha256="a2644cbfba1baa145ff7e8c8ef582a6eed7a7ec4ca792f7f054122bdec756268",
        origin="wheel",
        wheel_member="pyflink/lib/postgresql.jar",
    ),
    JarSpec(
        name=KINESIS_JAR,
        filename="flink-sql-connector-aws-kinesis-streams-6.0.0-2.0.jar",
        version="6.0.0-2.0",
        sha256=None,  # trust-on-first-use, recorded in jars.lock.json (see module docstring)
        origin="maven",
        maven_group="org.apache.flink",
        maven_artifact="flink-sql-connector-aws-kinesis-streams",
    ),
)


def read_lock(lock_file: Path = LOCK_FILE) -> dict[str, dict]:
    """The recorded checksums ({jar name: {version, sha256, sha1, source}}); {} when absent."""
    try:
        data = json.loads(lock_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise JarError(f"cannot read jar lock file {lock_file}: {exc}") from exc
    return dict(data.get("jars", {}))


def _apply_lock(specs: Iterable[JarSpec], lock: dict[str, dict]) -> tuple[JarSpec, ...]:
    out = []
    for spec in specs:
        entry = lock.get(spec.name)
        if spec.sha256 is None and entry and entry.get("version") == spec.version and entry.get("sha256"):
            spec = replace(spec, sha256=str(entry["sha256"]))
        out.append(spec)
    return tuple(out)


JARS: tuple[JarSpec, ...] = _apply_lock(_BASE_JARS, read_lock())
"""The manifest: JDBC core, JDBC postgres dialect, PostgreSQL driver, Kinesis sql connector."""


def spec_by_name(name: str) -> JarSpec:
    """The spec of a jar by name; JarError for an unknown name."""
    for spec in JARS:
        if spec.name == name:
            return spec
    raise JarError(f"unknown jar {name!r}; known: {', '.join(s.name for s in JARS)}")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha1_of(path: Path) -> str:
    """Hex sha1 of a file (Maven's published checksum)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_jar(spec: JarSpec, path: Path, where: str) -> None:
    """Raise JarError unless ``path`` hashes to the spec's pinned sha256."""
    if spec.sha256 is None:
        raise JarError(f"{spec.name}: no pinned sha256 to verify {path} ({where}) against")
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise JarError(
            f"{spec.name}: checksum mismatch for {path} ({where}): sha256 {actual}, expected {spec.sha256}"
        )


def default_cache_dir() -> Path:
    """Where the JDBC wheel is cached: $ASSET_CYCLE_CACHE_DIR or ~/.cache/asset-cycle."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asset-cycle"


def _copy_atomic(src_bytes_path: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    shutil.copyfile(src_bytes_path, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def ensure_wheel(cache_dir: Path | None = None) -> Path:
    """The verified JDBC wheel in the cache dir, downloaded with ``pip download --no-deps`` if missing."""
    cache = (cache_dir or default_cache_dir()) / "wheels"
    wheel = cache / WHEEL_FILENAME
    if wheel.is_file() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(cache), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    log.info("downloading %s into %s", WHEEL_REQUIREMENT, cache)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wheel.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise JarError(f"cannot download {WHEEL_REQUIREMENT} (source of the JDBC jars) into {cache}: {tail}")
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink(missing_ok=True)
        raise JarError(
            f"{WHEEL_FILENAME}: sha256 {actual}, expected {WHEEL_SHA256} (downloaded into {cache})"
        )
    return wheel


def _extract_from_wheel(spec: JarSpec, wheel: Path, target: Path) -> None:
    assert spec.wheel_member
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.wheel_member) as src:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out)
    except KeyError as exc:
        raise JarError(f"{spec.name}: {spec.wheel_member} not found in {wheel}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise JarError(f"{spec.name}: cannot read {wheel}: {exc}") from exc
    try:
        verify_jar(spec, Path(tmp), f"extracted from {wheel.name}")
    except JarError:
        os.unlink(tmp)
        raise
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _http_get(url: str, dest: Path) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "asset-cycle-jars/1"})
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out)


def record_lock(spec: JarSpec, sha256: str, sha1: str, source: str, lock_file: Path = LOCK_FILE) -> None:
    """Record a trust-on-first-use checksum in the lock file."""
    data: dict = {"jars": {}}
    if lock_file.is_file():
        data = json.loads(lock_file.read_text(encoding="utf-8"))
        data.setdefault("jars", {})
    data["jars"][spec.name] = {
        "version": spec.version,
        "filename": spec.filename,
        "sha256": sha256,
        "sha1": sha1,
        "source": source,
    }
    lock_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.warning(
        "recorded %s sha256 %s in %s (trust on first use; commit this file)", spec.name, sha256, lock_file
    )


def _fetch_maven(spec: JarSpec, target: Path, base_url: str, lock_file: Path) -> None:
    url = f"{base_url.rstrip('/')}/{spec.maven_path()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmpdir:
        tmp = Path(tmpdir) / spec.filename
        try:
            _http_get(url, tmp)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise JarError(f"{spec.name}: cannot download {url}: {exc}") from exc
        if spec.sha256 is not None:
            verify_jar(spec, tmp, url)
        else:
            sha1_file = Path(tmpdir) / (spec.filename + ".sha1")
            try:
                _http_get(url + ".sha1", sha1_file)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise JarError(
                    f"{spec.name}: no pinned sha256 and cannot download {url}.sha1: {exc}"
                ) from exc
            published = sha1_file.read_text(encoding="ascii", errors="replace").split()[0:1]
            actual_sha1 = sha1_of(tmp)
            if not published or published[0].lower() != actual_sha1:
                raise JarError(f"{spec.name}: sha1 {actual_sha1} does not match {url}.sha1 ({published})")
            record_lock(spec, sha256_of(tmp), actual_sha1, url, lock_file)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)


def _from_local(spec: JarSpec, local_dir: Path, target: Path, lock_file: Path) -> bool:
    candidates = [local_dir / spec.filename]
    if spec.wheel_member:
        candidates.append(local_dir / Path(spec.wheel_member).name)
    for cand in candidates:
        if not cand.is_file():
            continue
        if spec.sha256 is not None:
            verify_jar(spec, cand, f"local dir {local_dir}")
        else:
            sidecar = cand.with_name(cand.name + ".sha1")
            actual_sha1 = sha1_of(cand)
            if sidecar.is_file():
                published = sidecar.read_text(encoding="ascii", errors="replace").split()[0:1]
                if not published or published[0].lower() != actual_sha1:
                    raise JarError(f"{spec.name}: {cand} does not match {sidecar}")
            else:
                log.warning("%s: %s has no .sha1 next to it; trusting it on first use", spec.name, cand)
            record_lock(spec, sha256_of(cand), actual_sha1, f"local:{cand}", lock_file)
        if cand.resolve() != target.resolve():
            _copy_atomic(cand, target)
        return True
    return False


def ensure_jars(
    dest_dir: str | Path,
    names: Sequence[str] | None = None,
    maven_base_url: str | None = None,
    local_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    lock_file: Path = LOCK_FILE,
) -> list[Path]:
    """Materialise the named jars (default: all of JARS) in ``dest_dir``, verified; return their paths.

    Lookup order per jar: already in ``dest_dir`` with the pinned checksum; ``local_dir``; then the
    origin (JDBC wheel via pip / Maven repository at ``maven_base_url`` or $ASSET_CYCLE_MAVEN_BASE_URL
    or Maven Central). Raises JarError naming the jar and where it looked.
    """
    dest = Path(dest_dir)
    lock = read_lock(lock_file)
    specs = _apply_lock([spec_by_name(n) for n in names] if names is not None else JARS, lock)
    base_url = maven_base_url or os.environ.get(MAVEN_URL_ENV) or DEFAULT_MAVEN_BASE_URL
    local = Path(local_dir) if local_dir else None
    paths: list[Path] = []
    wheel: Path | None = None
    for spec in specs:
        target = dest / spec.filename
        if target.is_file() and spec.sha256 is not None and sha256_of(target) == spec.sha256:
            paths.append(target)
            continue
        looked: list[str] = [str(dest)]
        if local is not None:
            looked.append(f"local dir {local}")
            if _from_local(spec, local, target, lock_file):
                paths.append(target)
                continue
        try:
            if spec.origin == "wheel":
                looked.append(f"PyPI wheel {WHEEL_REQUIREMENT}")
                wheel = wheel or ensure_wheel(Path(cache_dir) if cache_dir else None)
                _extract_from_wheel(spec, wheel, target)
            else:
                looked.append(f"{base_url.rstrip('/')}/{spec.maven_path()}")
                _fetch_maven(spec, target, base_url, lock_file)
        except JarError as exc:
            raise JarError(f"{exc} (looked in: {'; '.join(looked)})") from exc
        paths.append(target)
    return paths


def jar_urls(paths: Iterable[str | Path]) -> list[str]:
    """file:// URLs for Flink's ``pipeline.jars``."""
    return [Path(p).resolve().as_uri() for p in paths]


def find_jar(name: str, jar_dir: str | Path) -> Path | None:
    """The jar's file in ``jar_dir`` if present (not re-verified), else None."""
    path = Path(jar_dir) / spec_by_name(name).filename
    return path if path.is_file() else None


def kinesis_jar_available(jar_dir: str | Path = DEFAULT_JAR_DIR) -> bool:
    """Whether the Kinesis sql connector jar is present in ``jar_dir``."""
    return find_jar(KINESIS_JAR, jar_dir) is not None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.jars fetch``: materialise the jars in --dest."""
    parser = argparse.ArgumentParser(prog="python -m deploy.jars", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser("fetch", help="fetch and verify the runtime jars")
    fetch.add_argument("--dest", default=str(DEFAULT_JAR_DIR), help="target directory (default .jars)")
    fetch.add_argument("--maven-base-url", default=None, help="Maven repository base URL")
    fetch.add_argument("--local-dir", default=None, help="directory holding pre-downloaded jars")
    fetch.add_argument("--cache-dir", default=None, help="cache for the JDBC wheel")
    group = fetch.add_mutually_exclusive_group()
    group.add_argument("--kinesis", action="store_true", help="also fetch the Kinesis connector (required)")
    group.add_argument(
        "--kinesis-optional", action="store_true", help="try the Kinesis connector, warn on failure"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    kw = {"maven_base_url": args.maven_base_url, "local_dir": args.local_dir, "cache_dir": args.cache_dir}
    try:
        for path in ensure_jars(args.dest, names=list(JDBC_JARS), **kw):
            print(f"ok {path}")
        if args.kinesis or args.kinesis_optional:
            try:
                for path in ensure_jars(args.dest, names=[KINESIS_JAR], **kw):
                    print(f"ok {path}")
            except JarError as exc:
                if args.kinesis:
                    raise
                print(
                    f"warning: Kinesis connector not fetched (only needed for --source kinesis): {exc}",
                    file=sys.stderr,
                )
    except JarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
