"""Tests of the MSF application zip builder (deploy.package) and `asset-cycle package`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import jars, package
from deploy.package import PackageError, build_package

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


@pytest.fixture
def fake_jar(tmp_path: Path) -> Path:
    """A tiny stand-in for the job's uber-jar: an entry for every class the package requires."""
    return _zip(tmp_path / "jars" / "asset-cycle-flink-0.1.0.jar",
                {cls.replace(".", "/") + ".class": b"\xca\xfe\xba\xbe" for cls in jars.REQUIRED_CLASSES})


def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        return set(zf.namelist())


# ----------------------------------------------------------------------------- layout


def test_zip_layout_and_contents(
    tmp_path: Path, wheel_dir: Path, fake_jar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runtime has numpy/certifi/pyjwt and (through apache-beam) orjson too
    monkeypatch.setattr(
        package, "runtime_provided", lambda: frozenset({"numpy", "certifi", "pyjwt", "orjson"})
    )
    out = tmp_path / "dist" / "app.zip"
    result = build_package(out, wheel_dir=wheel_dir, jar_path=fake_jar)
    names = _names(out)

    assert result.zip_path == out.resolve()
    assert "main.py" in names
    assert "lib/asset-cycle-flink.jar" in names
    assert "build-info.json" in names
    with zipfile.ZipFile(out) as zf:
        assert zf.read("main.py") == (ROOT / "deploy" / "msf_main.py").read_bytes()
        assert zf.read("lib/asset-cycle-flink.jar") == fake_jar.read_bytes()
        info = json.loads(zf.read("build-info.json"))
    assert info["run_options"] == {
        "kinesis.analytics.flink.run.options": {
            "python": "main.py",
            "jarfile": "lib/asset-cycle-flink.jar",
            "pyFiles": "lib/python/",
        }
    }
    assert info["jar"] == {"file": fake_jar.name, "sha256": hashlib.sha256(fake_jar.read_bytes()).hexdigest()}

    # the project's packages, below the pyFiles directory
    for pkg in package.PROJECT_PACKAGES:
        assert f"lib/python/{pkg}/__init__.py" in names
    assert "lib/python/cli/main.py" in names
    assert "lib/python/cli/commands/package.py" in names
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


def test_zip_is_reproducible(tmp_path: Path, wheel_dir: Path, fake_jar: Path) -> None:
    a = build_package(tmp_path / "a.zip", wheel_dir=wheel_dir, jar_path=fake_jar)
    b = build_package(tmp_path / "b.zip", wheel_dir=wheel_dir, jar_path=fake_jar)
    assert a.zip_path.read_bytes() == b.zip_path.read_bytes()


# ----------------------------------------------------------------------------- the uber-jar


def test_a_jar_without_the_kinesis_source_is_refused(tmp_path: Path, wheel_dir: Path) -> None:
    jar = _zip(tmp_path / "partial.jar", {cls.replace(".", "/") + ".class": b"x" for cls in jars.REQUIRED_CLASSES
                                          if cls != jars.KINESIS_SOURCE_CLASS})  # fmt: skip
    with pytest.raises(PackageError, match=f"lacks {jars.KINESIS_SOURCE_CLASS}"):
        build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_path=jar)
    assert not (tmp_path / "app.zip").exists()


def test_a_missing_jar_says_how_to_build_it(tmp_path: Path, wheel_dir: Path) -> None:
    with pytest.raises(PackageError, match="make setup"):
        build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_dir=tmp_path / "empty")


def test_the_real_zip_carries_the_kinesis_source_jdbc_and_driver_classes(tmp_path: Path, wheel_dir: Path) -> None:
    """The jar `make setup` built (Maven, pinned dependencies) goes into the zip with every class the
    job loads from it: our Kinesis source and file format, the JDBC connector, the PostgreSQL driver,
    the relocated AWS SDK."""
    from job.flink_env import required_jars

    [jar] = required_jars(None)
    out = build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_path=jar).zip_path
    with zipfile.ZipFile(out) as zf, zipfile.ZipFile(zf.open("lib/asset-cycle-flink.jar")) as inner:
        names = set(inner.namelist())
        services = inner.read("META-INF/services/java.sql.Driver").decode()
    for cls in jars.REQUIRED_CLASSES:
        assert cls.replace(".", "/") + ".class" in names
    assert "org.postgresql.Driver" in services
    # the AWS SDK and its HTTP client are relocated: no clash with another SDK on the class path
    assert not [n for n in names if n.startswith(("software/amazon/", "org/apache/http/"))]
    assert not [n for n in names if n.startswith("org/apache/flink/streaming/")]  # Flink is provided


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


def test_missing_vendored_wheel_is_an_error(tmp_path: Path, wheel_dir: Path, fake_jar: Path) -> None:
    next(wheel_dir.glob("pyproj-*.whl")).unlink()
    with pytest.raises(PackageError, match="pyproj"):
        build_package(tmp_path / "app.zip", wheel_dir=wheel_dir, jar_path=fake_jar)


@pytest.mark.slow
def test_real_msf_wheels_download(tmp_path: Path) -> None:
    """Real `pip download` of the MSF wheels (needs PyPI, as `asset-cycle package` does): a download
    or packaging error fails the test (it is not skipped: CI reaches PyPI, and a skip would hide a
    broken requirement)."""
    cache = ROOT / "build" / "msf"  # shared with `asset-cycle package`, so later runs are offline
    wheel_dir = package.download_wheels(package.vendored_requirements(), cache)
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


def test_cli_package(tmp_path: Path, wheel_dir: Path, fake_jar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    out = tmp_path / "app.zip"
    rc = main(["package", "-o", str(out), "--wheel-dir", str(wheel_dir), "--jar", str(fake_jar)])
    assert rc == 0
    assert out.is_file()
    text = capsys.readouterr().out
    assert "jarfile=lib/asset-cycle-flink.jar" in text
    assert "numpy" in text  # reported as provided by the runtime


def test_cli_package_with_a_bad_jar_is_one_error_line(
    tmp_path: Path, wheel_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    jar = _zip(tmp_path / "x.jar", {"x.class": b"x"})
    rc = main(["package", "-o", str(tmp_path / "app.zip"), "--wheel-dir", str(wheel_dir), "--jar", str(jar)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("asset-cycle package: error:") and "lacks" in err
    assert "\n" not in err
