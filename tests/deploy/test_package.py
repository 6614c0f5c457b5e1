"""Tests of the MSF application zip builder (deploy.package) and `asset-cycle package`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import jars, package
from deploy.package import PackageError, build_package, merge_jars

ROOT = Path(__file__).resolve().parents[2]
VENDORED_DISTS = {
    "shapely": "2.1.2",
    "pyproj": "3.7.1",
    "psycopg2_binary": "2.9.13",
    "redis": "5.3.1",
    "orjson": "3.11.0",
}


def _zip(path: Path, members: dict[str, bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    """Fake MSF wheels: the five vendored distributions plus numpy/certifi the runtime provides."""
    d = tmp_path / "wheels"
    for dist, version in VENDORED_DISTS.items():
        pkg = "psycopg2" if dist == "psycopg2_binary" else dist
        _zip(
            d / f"{dist}-{version}-cp312-cp312-manylinux2014_x86_64.whl",
            {
                f"{pkg}/__init__.py": f"NAME = {dist!r}\n",
                f"{dist}-{version}.dist-info/METADATA": f"Name: {dist}\nVersion: {version}\n",
                f"{dist}-{version}.data/purelib/{pkg}_extra.py": "X = 1\n",
                f"{dist}-{version}.data/scripts/{pkg}-tool": "#!/bin/sh\n",
            },
        )
    _zip(d / "numpy-2.2.6-cp312-cp312-manylinux2014_x86_64.whl", {"numpy/__init__.py": ""})
    _zip(d / "certifi-2026.1.1-py3-none-any.whl", {"certifi/__init__.py": ""})
    _zip(d / "pyjwt-2.10.1-py3-none-any.whl", {"jwt/__init__.py": ""})
    return d


FACTORY = "META-INF/services/org.apache.flink.table.factories.Factory"


@pytest.fixture
def fake_jars(tmp_path: Path) -> dict[str, Path]:
    """Tiny jars named like the manifest's files, in a local dir."""
    d = tmp_path / "localjars"
    specs = {s.name: s for s in jars.JARS}
    out = {
        "flink-connector-jdbc-core": _zip(
            d / specs["flink-connector-jdbc-core"].filename,
            {
                "META-INF/MANIFEST.MF": "Manifest-Version: 1.0\r\nMain-Class: x\r\n\r\n",
                FACTORY: "org.apache.flink.connector.jdbc.core.JdbcFactory\n",
                "META-INF/LICENSE": "jdbc license\n",
                "org/apache/flink/connector/jdbc/Core.class": b"\xca\xfe\xba\xbe core",
            },
        ),
        "flink-connector-jdbc-postgres": _zip(
            d / specs["flink-connector-jdbc-postgres"].filename,
            {
                "META-INF/services/org.apache.flink.connector.jdbc.core.database.JdbcFactory": "pg.PgFactory\n",
                "META-INF/LICENSE": "second license\n",
                "org/apache/flink/connector/jdbc/postgres/Pg.class": b"\xca\xfe\xba\xbe pg",
            },
        ),
        "postgresql": _zip(
            d / specs["postgresql"].filename,
            {
                "META-INF/services/java.sql.Driver": "org.postgresql.Driver",
                "META-INF/PGJDBC.SF": "Signature-Version: 1.0\n",
                "META-INF/PGJDBC.RSA": b"sig",
                "META-INF/versions/9/module-info.class": b"mod",
                "org/postgresql/Driver.class": b"\xca\xfe\xba\xbe driver",
            },
        ),
        jars.KINESIS_JAR: _zip(
            d / specs[jars.KINESIS_JAR].filename,
            {
                FACTORY: "# comment line\norg.apache.flink.connector.kinesis.table.KinesisDynamicTableFactory\n"
                "org.apache.flink.connector.jdbc.core.JdbcFactory\n",
                "module-info.class": b"mod",
                "org/apache/flink/connector/kinesis/source/KinesisStreamsSource.class": b"\xca\xfe\xba\xbe k",
            },
        ),
    }
    return out


@pytest.fixture
def patched_manifest(monkeypatch: pytest.MonkeyPatch, fake_jars: dict[str, Path]) -> dict[str, Path]:
    """deploy.jars.JARS with the fake jars' checksums (so ensure_jars verifies and copies them)."""
    patched = tuple(
        dataclasses.replace(spec, sha256=hashlib.sha256(fake_jars[spec.name].read_bytes()).hexdigest())
        for spec in jars.JARS
    )
    monkeypatch.setattr(jars, "JARS", patched)
    return fake_jars


def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        return set(zf.namelist())


# ----------------------------------------------------------------------------- layout


def test_zip_layout_and_contents(
    tmp_path: Path, wheel_dir: Path, fake_jars: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runtime has numpy/certifi/pyjwt and (through apache-beam) orjson too
    monkeypatch.setattr(
        package, "runtime_provided", lambda: frozenset({"numpy", "certifi", "pyjwt", "orjson"})
    )
    out = tmp_path / "dist" / "app.zip"
    result = build_package(out, wheel_dir=wheel_dir, jar_paths=list(fake_jars.values()))
    names = _names(out)

    assert result.zip_path == out.resolve()
    assert "main.py" in names
    assert "lib/asset-cycle-deps.jar" in names
    assert "build-info.json" in names
    with zipfile.ZipFile(out) as zf:
        assert zf.read("main.py") == (ROOT / "deploy" / "msf_main.py").read_bytes()
        info = json.loads(zf.read("build-info.json"))
    assert info["run_options"] == {
        "kinesis.analytics.flink.run.options": {
            "python": "main.py",
            "jarfile": "lib/asset-cycle-deps.jar",
            "pyFiles": "lib/python/",
        }
    }
    assert {j["file"] for j in info["jars"]} == {p.name for p in fake_jars.values()}

    # the project's packages, below the pyFiles directory
    for pkg in package.PROJECT_PACKAGES:
        assert f"lib/python/{pkg}/__init__.py" in names
    assert "lib/python/job/cli.py" in names
    assert "lib/python/job/commands/package.py" in names
    assert "lib/python/deploy/package.py" in names
    for sql in (ROOT / "sql").glob("*.sql"):
        assert f"lib/python/sql/{sql.name}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("lib/python/tests/")]

    # vendored wheels unpacked (purelib merged, scripts dropped); the explicitly vendored ones
    # always (orjson too), their dependencies only when the runtime lacks them (pyjwt: provided)
    for pkg in ("shapely", "pyproj", "psycopg2", "redis", "orjson"):
        assert f"lib/python/{pkg}/__init__.py" in names
    assert not [n for n in names if n.startswith("lib/python/jwt/")]
    assert "lib/python/shapely_extra.py" in names
    assert "lib/python/shapely-2.1.2.dist-info/METADATA" in names
    assert not [n for n in names if ".data/" in n or n.endswith("-tool")]
    assert not [n for n in names if n.startswith(("lib/python/numpy/", "lib/python/certifi/"))]
    assert sorted(result.skipped_wheels) == sorted(
        [
            "numpy-2.2.6-cp312-cp312-manylinux2014_x86_64.whl",
            "certifi-2026.1.1-py3-none-any.whl",
            "pyjwt-2.10.1-py3-none-any.whl",
        ]
    )
    # nothing outside the documented layout
    assert {n.split("/", 1)[0] for n in names} == {"main.py", "build-info.json", "lib"}


def test_zip_is_reproducible(tmp_path: Path, wheel_dir: Path, fake_jars: dict[str, Path]) -> None:
    a = build_package(tmp_path / "a.zip", wheel_dir=wheel_dir, jar_paths=list(fake_jars.values()))
    b = build_package(tmp_path / "b.zip", wheel_dir=wheel_dir, jar_paths=list(fake_jars.values()))
    assert a.zip_path.read_bytes() == b.zip_path.read_bytes()


def test_merged_jar(tmp_path: Path, fake_jars: dict[str, Path]) -> None:
    out = tmp_path / "deps.jar"
    stats = merge_jars(list(fake_jars.values()), out)
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        factory = zf.read(FACTORY).decode().splitlines()
        manifest = zf.read("META-INF/MANIFEST.MF").decode()
        license_text = zf.read("META-INF/LICENSE").decode()
        driver = zf.read("META-INF/services/java.sql.Driver").decode()
    # service files concatenated (unique lines, first-seen order)
    assert factory == [
        "org.apache.flink.connector.jdbc.core.JdbcFactory",
        "# comment line",
        "org.apache.flink.connector.kinesis.table.KinesisDynamicTableFactory",
    ]
    assert driver == "org.postgresql.Driver\n"
    assert "META-INF/services/org.apache.flink.connector.jdbc.core.database.JdbcFactory" in names
    # signatures, foreign manifests and module descriptors dropped
    assert not [n for n in names if n.endswith((".SF", ".RSA", ".DSA", ".EC"))]
    assert not [n for n in names if n.endswith("module-info.class")]
    assert "Main-Class" not in manifest
    assert license_text == "jdbc license\n"  # duplicates: first jar wins
    for cls in (
        "org/apache/flink/connector/jdbc/Core.class",
        "org/apache/flink/connector/jdbc/postgres/Pg.class",
        "org/postgresql/Driver.class",
        "org/apache/flink/connector/kinesis/source/KinesisStreamsSource.class",
    ):
        assert cls in names
    assert stats["duplicates"] == 1
    assert stats["services"] == 3


def test_bad_jar_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken-kinesis.jar"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="broken-kinesis.jar"):
        merge_jars([bad], tmp_path / "out.jar")


# ----------------------------------------------------------------------------- jars via deploy.jars


def test_jars_through_manifest_from_local_dir(
    tmp_path: Path, wheel_dir: Path, patched_manifest: dict[str, Path]
) -> None:
    local = next(iter(patched_manifest.values())).parent
    out = tmp_path / "app.zip"
    result = build_package(out, wheel_dir=wheel_dir, jar_dir=tmp_path / "jars", kinesis_jar_dir=local)
    assert sorted(result.jars) == sorted(p.name for p in patched_manifest.values())
    assert result.warnings == []
    with zipfile.ZipFile(out) as zf, zf.open("lib/asset-cycle-deps.jar") as fh:
        inner = zipfile.ZipFile(fh)
        assert "org/apache/flink/connector/kinesis/source/KinesisStreamsSource.class" in inner.namelist()


def test_missing_kinesis_jar_is_a_clear_error(
    tmp_path: Path, wheel_dir: Path, patched_manifest: dict[str, Path]
) -> None:
    local = tmp_path / "only-jdbc"
    local.mkdir()
    for name, path in patched_manifest.items():
        if name != jars.KINESIS_JAR:
            (local / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "app.zip"
    with pytest.raises(PackageError, match=jars.KINESIS_JAR) as err:
        build_package(
            out,
            wheel_dir=wheel_dir,
            jar_dir=tmp_path / "jars",
            kinesis_jar_dir=local,
            maven_base_url=(tmp_path / "no-maven").as_uri(),
        )
    assert "missing jar" in str(err.value)
    assert not out.exists()  # never a partial zip

    # --allow-missing-kinesis: built, with a warning, without the connector
    result = build_package(
        out,
        wheel_dir=wheel_dir,
        jar_dir=tmp_path / "jars",
        kinesis_jar_dir=local,
        maven_base_url=(tmp_path / "no-maven").as_uri(),
        allow_missing_kinesis=True,
    )
    assert out.is_file()
    assert result.warnings and "Kinesis" in result.warnings[0]
    assert not [j for j in result.jars if "kinesis" in j]


def test_missing_jdbc_jar_is_an_error_even_with_allow_flag(tmp_path: Path, wheel_dir: Path) -> None:
    with pytest.raises(PackageError, match="missing jar: .*postgresql"):
        build_package(
            tmp_path / "app.zip",
            wheel_dir=wheel_dir,
            jar_paths=[tmp_path / "postgresql-42.7.3.jar"],
            allow_missing_kinesis=True,
        )


def test_jar_paths_without_kinesis_need_the_flag(
    tmp_path: Path, wheel_dir: Path, fake_jars: dict[str, Path]
) -> None:
    jdbc_only = [p for n, p in fake_jars.items() if n != jars.KINESIS_JAR]
    with pytest.raises(PackageError, match="Kinesis"):
        build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_paths=jdbc_only)
    assert not (tmp_path / "app.zip").exists()


def test_checksum_mismatch_is_an_error(
    tmp_path: Path, wheel_dir: Path, patched_manifest: dict[str, Path]
) -> None:
    local = tmp_path / "tampered"
    local.mkdir()
    for path in patched_manifest.values():
        (local / path.name).write_bytes(path.read_bytes() + b"x")
    with pytest.raises(PackageError, match="checksum mismatch"):
        build_package(
            tmp_path / "app.zip", wheel_dir=wheel_dir, jar_dir=tmp_path / "jars", kinesis_jar_dir=local
        )


def test_real_jdbc_jars_merge(tmp_path: Path, fake_jars: dict[str, Path]) -> None:
    """The real JDBC jars from deploy.jars (cached PyPI wheel); skipped when not obtainable."""
    local = jars.DEFAULT_JAR_DIR if jars.DEFAULT_JAR_DIR.is_dir() else None
    try:
        real = jars.ensure_jars(tmp_path / "jars", names=list(jars.JDBC_JARS), local_dir=local)
    except jars.JarError as exc:
        pytest.skip(f"JDBC jars not obtainable here: {exc}")
    out = tmp_path / "deps.jar"
    merge_jars([*real, fake_jars[jars.KINESIS_JAR]], out)
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert "org.postgresql.Driver" in zf.read("META-INF/services/java.sql.Driver").decode()
        factories = zf.read(FACTORY).decode().splitlines()
    assert "org.apache.flink.connector.kinesis.table.KinesisDynamicTableFactory" in factories
    assert any("jdbc" in f.lower() for f in factories)
    assert "org/postgresql/Driver.class" in names
    assert not [n for n in names if n.upper().endswith((".SF", ".RSA", ".DSA"))]


# ----------------------------------------------------------------------------- wheels


def test_vendored_requirements_follow_pyproject() -> None:
    reqs = package.vendored_requirements()
    assert [r.split(">")[0].split("=")[0].split("<")[0] for r in reqs] == list(package.VENDORED_REQUIREMENTS)
    assert "shapely>=2.0,<3" in reqs
    assert not [r for r in reqs if r.startswith(("apache-flink", "boto3"))]


def test_runtime_provided_covers_flink_and_boto3() -> None:
    provided = package.runtime_provided()
    for name in ("apache-flink", "numpy", "pandas", "pyarrow", "certifi", "boto3", "botocore"):
        assert name in provided
    for name in ("shapely", "pyproj", "psycopg2-binary", "apache-flink-libraries-not-a-dist"):
        assert name not in provided


def test_explicitly_vendored_wheels_are_kept_even_if_provided(wheel_dir: Path) -> None:
    provided = {"numpy", "orjson", "redis", "pyjwt", "certifi"}
    chosen = {package.wheel_distribution(w) for w in package.select_wheels(wheel_dir, provided)}
    assert chosen == {"shapely", "pyproj", "psycopg2-binary", "redis", "orjson"}


def test_download_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        _zip(dest / "orjson-3.11.0-cp312-cp312-manylinux2014_x86_64.whl", {"orjson/__init__.py": ""})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(package.subprocess, "run", fake_run)
    first = package.download_wheels(["orjson>=3.9,<4"], tmp_path)
    second = package.download_wheels(["orjson>=3.9,<4"], tmp_path)
    assert first == second
    assert len(calls) == 1
    cmd = calls[0]
    for flag in ("--only-binary=:all:", "manylinux2014_x86_64", "3.12", "cp312", "orjson>=3.9,<4"):
        assert flag in cmd
    # a different requirement set is a different cache entry
    package.download_wheels(["orjson>=3.10"], tmp_path)
    assert len(calls) == 2


def test_download_failure_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for orjson\n")

    monkeypatch.setattr(package.subprocess, "run", failing_run)
    with pytest.raises(PackageError, match="No matching distribution"):
        package.download_wheels(["orjson"], tmp_path)
    # not marked complete: the next call tries again
    assert not list(tmp_path.glob("*/.complete"))


def test_missing_vendored_wheel_is_an_error(
    tmp_path: Path, wheel_dir: Path, fake_jars: dict[str, Path]
) -> None:
    next(wheel_dir.glob("pyproj-*.whl")).unlink()
    with pytest.raises(PackageError, match="pyproj"):
        build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_paths=list(fake_jars.values()))


@pytest.mark.slow
def test_real_msf_wheels_download(tmp_path: Path) -> None:
    """Real `pip download` of the MSF wheels (PyPI); skipped when PyPI is unreachable."""
    cache = ROOT / "build" / "msf"  # shared with `asset-cycle package`, so later runs are offline
    try:
        wheel_dir = package.download_wheels(package.vendored_requirements(), cache)
    except PackageError as exc:
        pytest.skip(f"PyPI not reachable: {exc}")
    chosen = {
        package.wheel_distribution(w) for w in package.select_wheels(wheel_dir, package.runtime_provided())
    }
    assert {"shapely", "pyproj", "psycopg2-binary", "redis", "orjson"} <= chosen
    assert "numpy" not in chosen
    for wheel in wheel_dir.glob("*.whl"):
        assert "cp312" in wheel.name or "py3-none-any" in wheel.name or "abi3" in wheel.name


# ----------------------------------------------------------------------------- entry point and CLI


def test_msf_main_puts_lib_python_first_and_runs_job_main(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "lib" / "python" / "job").mkdir(parents=True)
    (app / "main.py").write_bytes((ROOT / "deploy" / "msf_main.py").read_bytes())
    (app / "lib" / "python" / "job" / "__init__.py").write_text("")
    (app / "lib" / "python" / "job" / "main.py").write_text(
        "import sys\n\ndef main():\n    print(sys.path.index(__file__.rsplit('/job/', 1)[0]))\n    return 7\n"
    )
    proc = subprocess.run([sys.executable, "main.py"], cwd=app, capture_output=True, text=True, check=False)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == "0"


def test_cli_package(
    tmp_path: Path, wheel_dir: Path, patched_manifest: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from job.cli import main

    local = next(iter(patched_manifest.values())).parent
    out = tmp_path / "app.zip"
    rc = main(
        ["package", "-o", str(out), "--wheel-dir", str(wheel_dir), "--jar-dir", str(tmp_path / "j"),
         "--kinesis-jar-dir", str(local)]
    )  # fmt: skip
    assert rc == 0
    assert out.is_file()
    text = capsys.readouterr().out
    assert "jarfile=lib/asset-cycle-deps.jar" in text
    assert "numpy" in text  # reported as provided by the runtime


def test_cli_package_missing_kinesis(
    tmp_path: Path, wheel_dir: Path, patched_manifest: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from job.cli import main

    local = tmp_path / "empty"
    local.mkdir()
    for name, path in patched_manifest.items():
        if name != jars.KINESIS_JAR:
            (local / path.name).write_bytes(path.read_bytes())
    rc = main(
        ["package", "-o", str(tmp_path / "app.zip"), "--wheel-dir", str(wheel_dir), "--jar-dir",
         str(tmp_path / "j"), "--kinesis-jar-dir", str(local), "--maven-base-url", (tmp_path / "nope").as_uri()]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("asset-cycle package: error: missing jar")
    assert jars.KINESIS_JAR in err
    assert "\n" not in err
