"""deploy.jars: the job's uber-jar and the sha256 pins of every third-party jar that goes into it."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from deploy import jars
from deploy.jars import Artifact, JarError


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_lock_pins_exactly_what_maven_resolves():
    """The real resolution (Maven, cached in ~/.m2 after make setup) matches java/dependencies.lock."""
    artifacts = jars.resolve()
    jars.verify(artifacts, jars.read_lock())
    coordinates = {a.coordinates for a in artifacts}
    for wanted in ("org.apache.flink:flink-connector-jdbc-core:4.0.0-2.0",
                   "org.apache.flink:flink-connector-jdbc-postgres:4.0.0-2.0", "software.amazon.awssdk:kinesis:2.57.8"):
        assert wanted in coordinates
    assert any(c.startswith("org.postgresql:postgresql:42.7.") for c in coordinates)
    assert not [c for c in coordinates if c.startswith("org.apache.flink:flink-streaming-java")]  # provided


def test_an_unpinned_jar_is_a_one_line_error_naming_it(tmp_path):
    jar = _file(tmp_path / "a.jar", b"a")
    with pytest.raises(JarError, match=r"^g:a:1 goes into the jar but is not pinned") as err:
        jars.verify([Artifact("g:a:1", jar)], {})
    assert "\n" not in str(err.value)


def test_a_wrong_checksum_names_the_artifact_and_both_hashes(tmp_path):
    jar = _file(tmp_path / "a.jar", b"tampered")
    pinned = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(JarError, match="g:a:1: checksum mismatch") as err:
        jars.verify([Artifact("g:a:1", jar)], {"g:a:1": pinned})
    assert pinned in str(err.value) and hashlib.sha256(b"tampered").hexdigest() in str(err.value)


def test_a_pin_maven_no_longer_resolves_is_an_error(tmp_path):
    jar = _file(tmp_path / "a.jar", b"a")
    pins = {"g:a:1": hashlib.sha256(b"a").hexdigest(), "g:old:0.9": "0" * 64}
    with pytest.raises(JarError, match="g:old:0.9 is pinned .* no longer resolves"):
        jars.verify([Artifact("g:a:1", jar)], pins)


def test_matching_pins_pass(tmp_path):
    jar = _file(tmp_path / "a.jar", b"a")
    jars.verify([Artifact("g:a:1", jar)], {"g:a:1": hashlib.sha256(b"a").hexdigest()})


def test_lock_file_round_trip_and_malformed_lines(tmp_path):
    jar = _file(tmp_path / "a.jar", b"a")
    lock = tmp_path / "dependencies.lock"
    jars.write_lock([Artifact("g:a:1", jar)], lock)
    assert jars.read_lock(lock) == {"g:a:1": hashlib.sha256(b"a").hexdigest()}
    lock.write_text("# comment\ng:a:1 nothex\n")
    with pytest.raises(JarError, match=r"dependencies.lock:2: expected"):
        jars.read_lock(lock)


def test_an_artifact_maven_cannot_fetch_is_named(tmp_path):
    pom = (jars.POM.read_text()
           .replace("</dependencyManagement>\n\n  <dependencies>\n", "</dependencyManagement>\n\n  <dependencies>\n"
                    "    <dependency><groupId>org.example.absent</groupId><artifactId>not-published</artifactId>"
                    "<version>0.0.1</version></dependency>\n", 1))  # fmt: skip
    assert "org.example.absent" in pom
    (tmp_path / "pom.xml").write_text(pom)
    with pytest.raises(JarError, match="org.example.absent:not-published") as err:
        jars.resolve(tmp_path)
    assert "\n" not in str(err.value)


def test_verify_jar_names_a_missing_class(tmp_path):
    jar = tmp_path / "x.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("assetcycle/connector/kinesis/KinesisSource.class", b"x")
    with pytest.raises(JarError, match=f"lacks {jars.FILE_FORMAT_CLASS}"):
        jars.verify_jar(jar)


def test_jar_name_follows_the_pom_and_a_missing_jar_says_how_to_build_it(tmp_path):
    assert jars.jar_name() == f"asset-cycle-flink-{jars.jar_version()}.jar"
    assert jars.find_jar(tmp_path) is None
    with pytest.raises(JarError, match="make setup"):
        jars.require_jar(tmp_path)


def test_cli_verify(capsys):
    assert jars.main(["verify"]) == 0
    assert "match" in capsys.readouterr().out
