"""deploy.jars: checksum verification, wheel extraction, Maven trust-on-first-use, clear errors."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from deploy import jars


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def fake_wheel(tmp_path, monkeypatch):
    """A wheel in the cache dir holding fake JDBC jars, with the manifest pinned to their hashes."""
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    wheel = cache / "wheels" / jars.WHEEL_FILENAME
    members = {spec.wheel_member: f"jar {spec.name}".encode() for spec in jars.JARS if spec.origin == "wheel"}
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    monkeypatch.setattr(jars, "WHEEL_SHA256", _sha256(wheel.read_bytes()))
    pinned = tuple(
        replace(s, sha256=_sha256(members[s.wheel_member])) if s.origin == "wheel" else s for s in jars.JARS
    )
    monkeypatch.setattr(jars, "JARS", pinned)
    return cache, members


def test_manifest_pins_the_expected_jars():
    names = [s.name for s in jars.JARS]
    assert names[:3] == list(jars.JDBC_JARS)
    assert jars.KINESIS_JAR in names
    for spec in jars.JARS:
        assert spec.filename.endswith(".jar") and spec.version in spec.filename
        if spec.origin == "wheel":
            assert spec.sha256 and len(spec.sha256) == 64
    kinesis = jars.spec_by_name(jars.KINESIS_JAR)
    assert kinesis.version == "6.0.0-2.0"
    assert kinesis.maven_path() == (
        "org/apache/flink/flink-sql-connector-aws-kinesis-streams/6.0.0-2.0/"
        "flink-sql-connector-aws-kinesis-streams-6.0.0-2.0.jar"
    )


def test_extracts_from_cached_wheel_and_verifies(tmp_path, fake_wheel):
    cache, members = fake_wheel
    paths = jars.ensure_jars(tmp_path / "dest", names=list(jars.JDBC_JARS), cache_dir=cache)
    assert [p.name for p in paths] == [jars.spec_by_name(n).filename for n in jars.JDBC_JARS]
    for p, data in zip(paths, members.values(), strict=True):
        assert p.read_bytes() == data
    # second call reuses the verified files
    assert jars.ensure_jars(tmp_path / "dest", names=list(jars.JDBC_JARS), cache_dir=cache) == paths
    assert jars.jar_urls(paths)[0].startswith("file:///")


def test_checksum_mismatch_in_wheel_is_an_error(tmp_path, fake_wheel, monkeypatch):
    cache, _ = fake_wheel
    bad = tuple(replace(s, sha256="0" * 64) if s.name == "postgresql" else s for s in jars.JARS)
    monkeypatch.setattr(jars, "JARS", bad)
    with pytest.raises(jars.JarError, match=r"postgresql: checksum mismatch"):
        jars.ensure_jars(tmp_path / "dest", names=["postgresql"], cache_dir=cache)
    assert not (tmp_path / "dest" / jars.spec_by_name("postgresql").filename).exists()


def test_tampered_jar_in_dest_is_replaced(tmp_path, fake_wheel):
    cache, members = fake_wheel
    dest = tmp_path / "dest"
    dest.mkdir()
    spec = jars.spec_by_name("flink-connector-jdbc-core")
    (dest / spec.filename).write_bytes(b"tampered")
    [path] = jars.ensure_jars(dest, names=[spec.name], cache_dir=cache)
    assert path.read_bytes() == members[spec.wheel_member]


def test_local_dir_with_wrong_checksum_is_an_error(tmp_path, fake_wheel):
    cache, _ = fake_wheel
    local = tmp_path / "local"
    local.mkdir()
    spec = jars.spec_by_name("flink-connector-jdbc-postgres")
    (local / spec.filename).write_bytes(b"not the jar")
    with pytest.raises(jars.JarError, match="flink-connector-jdbc-postgres: checksum mismatch.*local dir"):
        jars.ensure_jars(tmp_path / "dest", names=[spec.name], local_dir=local, cache_dir=cache)


def test_missing_kinesis_jar_names_jar_and_places(tmp_path):
    repo = tmp_path / "maven"
    repo.mkdir()
    with pytest.raises(jars.JarError) as err:
        jars.ensure_jars(
            tmp_path / "dest",
            names=[jars.KINESIS_JAR],
            maven_base_url=repo.as_uri(),
            local_dir=tmp_path / "nowhere",
            lock_file=tmp_path / "lock.json",
        )
    msg = str(err.value)
    assert jars.KINESIS_JAR in msg
    assert "nowhere" in msg and repo.as_uri() in msg
    assert not jars.kinesis_jar_available(tmp_path / "dest")


def _publish(repo: Path, spec: jars.JarSpec, data: bytes, sha1: str | None = None) -> Path:
    target = repo / spec.maven_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    (target.parent / (spec.filename + ".sha1")).write_text((sha1 or hashlib.sha1(data).hexdigest()) + "\n")
    return target


def test_maven_trust_on_first_use_records_then_enforces(tmp_path, monkeypatch):
    monkeypatch.setattr(
        jars, "JARS", tuple(replace(s, sha256=None) if s.origin == "maven" else s for s in jars.JARS)
    )
    repo, lock = tmp_path / "maven", tmp_path / "lock.json"
    spec = jars.spec_by_name(jars.KINESIS_JAR)
    _publish(repo, spec, b"kinesis jar bytes")
    [path] = jars.ensure_jars(
        tmp_path / "dest", names=[spec.name], maven_base_url=repo.as_uri(), lock_file=lock
    )
    assert path.read_bytes() == b"kinesis jar bytes"
    assert jars.kinesis_jar_available(tmp_path / "dest")
    entry = json.loads(lock.read_text())["jars"][spec.name]
    assert entry["sha256"] == _sha256(b"kinesis jar bytes") and entry["version"] == spec.version
    # the recorded sha256 now rules: a different artifact (even with a matching .sha1) is refused
    path.unlink()
    (repo / spec.maven_path()).write_bytes(b"other bytes")
    with pytest.raises(jars.JarError, match="checksum mismatch"):
        jars.ensure_jars(tmp_path / "dest", names=[spec.name], maven_base_url=repo.as_uri(), lock_file=lock)


def test_maven_sha1_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(
        jars, "JARS", tuple(replace(s, sha256=None) if s.origin == "maven" else s for s in jars.JARS)
    )
    repo, lock = tmp_path / "maven", tmp_path / "lock.json"
    spec = jars.spec_by_name(jars.KINESIS_JAR)
    _publish(repo, spec, b"kinesis jar bytes", sha1="0" * 40)
    with pytest.raises(jars.JarError, match=r"does not match .*\.sha1"):
        jars.ensure_jars(tmp_path / "dest", names=[spec.name], maven_base_url=repo.as_uri(), lock_file=lock)
    assert not lock.exists()


def test_unknown_jar_name():
    with pytest.raises(jars.JarError, match="unknown jar"):
        jars.ensure_jars("/tmp/x", names=["nope"])


def test_cli_reports_missing_kinesis_as_error(tmp_path, fake_wheel, capsys):
    cache, _ = fake_wheel
    rc = jars.main(
        [
            "fetch",
            "--dest",
            str(tmp_path / "d"),
            "--cache-dir",
            str(cache),
            "--kinesis",
            "--maven-base-url",
            (tmp_path / "empty").as_uri(),
        ]
    )
    assert rc == 1
    assert jars.KINESIS_JAR in capsys.readouterr().err
    rc = jars.main(
        [
            "fetch",
            "--dest",
            str(tmp_path / "d"),
            "--cache-dir",
            str(cache),
            "--kinesis-optional",
            "--maven-base-url",
            (tmp_path / "empty").as_uri(),
        ]
    )
    assert rc == 0
