"""The job's one uber-jar: built from ``java/`` by Maven, every third-party jar in it pinned.

``java/pom.xml`` builds ``asset-cycle-flink-<version>.jar``: our Kinesis source and line-numbered
file format, the Flink JDBC connector (core + PostgreSQL dialect) and the PostgreSQL driver, with
the AWS SDK relocated (Flink itself is ``provided``). Local runs (``pipeline.jars``), the tests,
the Docker image and the MSF zip all use this jar.

``java/dependencies.lock`` pins every jar that goes into it: one line ``group:artifact:version
sha256`` per runtime dependency Maven resolves. ``build`` resolves the dependencies, checks each
resolved file against its pin (a jar that is not pinned, a pin Maven no longer resolves, a wrong
checksum or an artifact Maven cannot fetch is a one-line error naming it), then packages and
copies the jar into ``.jars/``. After a deliberate version change, ``lock`` rewrites the pins from
what Maven resolved (review the diff before committing it).

Usage: ``python -m deploy.jars build|verify|lock [--dest .jars]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
JAVA_DIR = PROJECT_ROOT / "java"
POM = JAVA_DIR / "pom.xml"
LOCK_FILE = JAVA_DIR / "dependencies.lock"
DEFAULT_JAR_DIR = PROJECT_ROOT / ".jars"
ARTIFACT_ID = "asset-cycle-flink"
MAVEN_TIMEOUT_S = 1800

KINESIS_SOURCE_CLASS = "assetcycle.connector.kinesis.KinesisSource"
FILE_FORMAT_CLASS = "assetcycle.connector.file.LineNumberedTextFormat"
REQUIRED_CLASSES = (
    KINESIS_SOURCE_CLASS,
    FILE_FORMAT_CLASS,
    "assetcycle.pipeline.RecordBatcher",
    "assetcycle.pipeline.BatchEndWatermarks",
    "assetcycle.sink.JdbcUpsertSink",
    "assetcycle.metrics.LocalMetricsReporterFactory",
    "org.apache.flink.connector.jdbc.core.table.JdbcDynamicTableFactory",
    "org.apache.flink.connector.jdbc.postgres.database.PostgresFactory",
    "org.postgresql.Driver",
    "assetcycle.shaded.software.amazon.awssdk.services.kinesis.KinesisClient",
)
"""Classes the job needs from the uber-jar (checked by the package test and ``verify_jar``)."""


class JarError(Exception):
    """The jar cannot be built or fails its checks (the message names the artifact)."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """One resolved Maven artifact: ``group:artifact:version`` and its file."""

    coordinates: str
    path: Path


def jar_version(pom: Path = POM) -> str:
    """The project version in ``pom.xml`` (the one right after our artifactId)."""
    match = re.search(rf"<artifactId>{ARTIFACT_ID}</artifactId>\s*<version>([^<]+)</version>", pom.read_text())
    if match is None:
        raise JarError(f"cannot find the {ARTIFACT_ID} version in {pom}")
    return match.group(1).strip()


def jar_name(pom: Path = POM) -> str:
    """File name of the uber-jar, e.g. ``asset-cycle-flink-0.1.0.jar``."""
    return f"{ARTIFACT_ID}-{jar_version(pom)}.jar"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """{group:artifact:version: sha256} from the lock file (``#`` comments and blank lines ignored)."""
    try:
        text = lock_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise JarError(f"cannot read {lock_file}: {exc}") from exc
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0].count(":") != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise JarError(f"{lock_file}:{number}: expected 'group:artifact:version sha256', got {line!r}")
        pins[parts[0]] = parts[1]
    return pins


def write_lock(artifacts: list[Artifact], lock_file: Path = LOCK_FILE) -> None:
    """Pin ``artifacts`` (their current files) in the lock file."""
    lines = [
        "# Every third-party jar in the asset-cycle-flink uber-jar: group:artifact:version sha256.",
        "# Checked by `python -m deploy.jars build` (make setup); rewritten by `python -m deploy.jars lock`.",
    ]
    lines += [f"{a.coordinates} {sha256_of(a.path)}" for a in sorted(artifacts, key=lambda a: a.coordinates)]
    lock_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _maven(args: list[str], java_dir: Path) -> subprocess.CompletedProcess:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarError("Maven (mvn) not found: install it (apt-get install maven) to build the job's jar")
    try:
        return subprocess.run([mvn, "-B", "-q", "-f", str(java_dir / "pom.xml"), *args], capture_output=True,
                              text=True, timeout=MAVEN_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise JarError(f"mvn {' '.join(args)} did not finish in {MAVEN_TIMEOUT_S} s") from exc


def _maven_failure(proc: subprocess.CompletedProcess, what: str) -> JarError:
    output = (proc.stdout or "") + (proc.stderr or "")
    unresolved = re.search(r"(?:Could not (?:find|resolve|transfer) artifact|could not be resolved:?)\s*([^\s,]+)",
                           output)  # fmt: skip
    if unresolved:
        return JarError(f"{what}: Maven cannot fetch {unresolved.group(1).rstrip(':')} (not in the repository?)")
    errors = [line for line in output.splitlines() if "ERROR" in line]
    return JarError(f"{what} failed: {(errors[0] if errors else output.strip()[-300:]).strip()}")


def resolve(java_dir: Path = JAVA_DIR) -> list[Artifact]:
    """The runtime dependencies Maven resolves for the uber-jar (downloading them when needed)."""
    with tempfile.TemporaryDirectory(prefix="asset-cycle-deps-") as tmp:
        listing = Path(tmp) / "deps.txt"
        proc = _maven(["dependency:list", "-DincludeScope=runtime", "-DoutputAbsoluteArtifactFilename=true",
                       f"-DoutputFile={listing}"], java_dir)  # fmt: skip
        if proc.returncode != 0 or not listing.is_file():
            raise _maven_failure(proc, "resolving the Java dependencies")
        text = listing.read_text(encoding="utf-8")
    artifacts = []
    for line in text.splitlines():
        # group:artifact:type[:classifier]:version:scope:/path -- module ...
        match = re.match(r"\s*([^:\s]+):([^:\s]+):jar:(?:[^:\s]+:)?([^:\s]+):(compile|runtime):(/[^ ]+)", line)
        if match:
            group, artifact, version, _scope, path = match.groups()
            artifacts.append(Artifact(f"{group}:{artifact}:{version}", Path(path)))
    return artifacts


def verify(artifacts: list[Artifact], pins: dict[str, str], lock_file: Path = LOCK_FILE) -> None:
    """Raise JarError unless the resolved artifacts are exactly the pinned ones, with their checksums."""
    resolved = {a.coordinates: a for a in artifacts}
    for coordinates, artifact in sorted(resolved.items()):
        if coordinates not in pins:
            raise JarError(f"{coordinates} goes into the jar but is not pinned in {lock_file} "
                           "(after a deliberate change: python -m deploy.jars lock)")  # fmt: skip
        if not artifact.path.is_file():
            raise JarError(f"{coordinates}: resolved file {artifact.path} is missing")
        actual = sha256_of(artifact.path)
        if actual != pins[coordinates]:
            raise JarError(f"{coordinates}: checksum mismatch for {artifact.path}: sha256 {actual}, "
                           f"pinned {pins[coordinates]}")  # fmt: skip
    stale = sorted(set(pins) - set(resolved))
    if stale:
        raise JarError(f"{stale[0]} is pinned in {lock_file} but Maven no longer resolves it "
                       "(after a deliberate change: python -m deploy.jars lock)")  # fmt: skip


def verify_jar(path: Path) -> None:
    """Raise JarError unless ``path`` is a jar with every class of REQUIRED_CLASSES."""
    try:
        with zipfile.ZipFile(path) as jar:
            names = set(jar.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise JarError(f"{path} is not a readable jar: {exc}") from exc
    for cls in REQUIRED_CLASSES:
        if cls.replace(".", "/") + ".class" not in names:
            raise JarError(f"{path} lacks {cls}")


def build(dest_dir: Path = DEFAULT_JAR_DIR, java_dir: Path = JAVA_DIR, lock_file: Path = LOCK_FILE) -> Path:
    """Resolve and verify the pinned dependencies, package the uber-jar, copy it into ``dest_dir``."""
    verify(resolve(java_dir), read_lock(lock_file), lock_file)
    proc = _maven(["package", "-DskipTests"], java_dir)
    name = jar_name(java_dir / "pom.xml")
    built = java_dir / "target" / name
    if proc.returncode != 0 or not built.is_file():
        raise _maven_failure(proc, "building the Java part")
    verify_jar(built)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.")
    os.close(fd)
    shutil.copyfile(built, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def find_jar(jar_dir: Path | None = None) -> Path | None:
    """The built uber-jar in ``jar_dir`` (default ``.jars/``), or None."""
    path = Path(jar_dir or DEFAULT_JAR_DIR) / jar_name()
    return path if path.is_file() else None


def require_jar(jar_dir: Path | None = None) -> Path:
    """The built uber-jar; JarError telling how to build it when absent."""
    path = find_jar(jar_dir)
    if path is None:
        raise JarError(f"{jar_name()} not found in {jar_dir or DEFAULT_JAR_DIR}; build it with: make setup "
                       "(or python -m deploy.jars build)")  # fmt: skip
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.jars build|verify|lock``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.jars", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "verify", "lock"),
                        help="build: verify + package into --dest; verify: check the pins only; "
                             "lock: rewrite the pins from what Maven resolves")  # fmt: skip
    parser.add_argument("--dest", type=Path, default=DEFAULT_JAR_DIR, help="where build puts the jar")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(f"built {build(args.dest)}")
        elif args.command == "verify":
            artifacts = resolve()
            verify(artifacts, read_lock())
            print(f"{len(artifacts)} Java dependencies match {LOCK_FILE}")
        else:
            artifacts = resolve()
            write_lock(artifacts)
            print(f"pinned {len(artifacts)} Java dependencies in {LOCK_FILE}")
    except JarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
