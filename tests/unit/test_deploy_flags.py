"""Every flag that the systemd units and Kubernetes manifests pass to fleetcap exists in the CLI."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from fleetcap.main import build_parser

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
FILES = {
    "systemd/fleetcap-coordinator.service": "coordinator",
    "kubernetes/coordinator-deployment.yaml": "coordinator",
    "systemd/fleetcap-agent.service": "agent",
    "kubernetes/agent-daemonset.yaml": "agent",
    "systemd/fleetcap-gateway.service": "gateway",
}


def options_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return set(sub._option_string_actions) | set(parser._option_string_actions)


@pytest.mark.parametrize(("path", "command"), sorted(FILES.items()))
def test_every_flag_exists(path, command):
    text = (DEPLOY / path).read_text()
    # The fleetcap command line only: from "fleetcap <command>" (or the args list) to its end.
    start = text.index(f"fleetcap {command}") if f"fleetcap {command}" in text else text.index(f'"{command}"')
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text[start:]))
    assert flags, f"no flags found in {path}"
    unknown = flags - options_of(command)
    assert unknown == set(), f"{path} passes flags 'fleetcap {command}' does not have: {sorted(unknown)}"


def manifests() -> list[dict]:
    import yaml

    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_kubernetes_workload_is_locked_down():
    workloads = {d["metadata"]["name"]: d for d in manifests() if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")}
    assert sorted(workloads) == ["fleetcap-agent", "fleetcap-coordinator", "fleetcap-etcd"]
    for name, w in workloads.items():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, False), name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["capabilities"].get("add", []) == (["NET_RAW", "NET_ADMIN"] if name == "fleetcap-agent" else [])
        if name != "fleetcap-agent":
            assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert set(c["resources"]) == {"requests", "limits"}, name
            assert set(c["resources"]["limits"]) == {"cpu", "memory"}, name
    coordinator = workloads["fleetcap-coordinator"]["spec"]["template"]["spec"]["containers"][0]
    health_port = int(coordinator["args"][coordinator["args"].index("--health-listen") + 1].rsplit(":", 1)[1])
    assert coordinator["readinessProbe"]["grpc"] == {"port": health_port, "service": "fleetcap.v1.PacketCaptures"}
    assert coordinator["livenessProbe"]["grpc"] == {"port": health_port}
    etcd = " ".join(workloads["fleetcap-etcd"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "http://" not in etcd
    assert "--client-cert-auth" in etcd
    assert "--peer-client-cert-auth" in etcd
    # The replicas share the local storage account's directory (docs/operations.md).
    storage_dir = coordinator["args"][coordinator["args"].index("--storage-dir") + 1]
    mount = next(m for m in coordinator["volumeMounts"] if m["mountPath"] == storage_dir)
    volumes = workloads["fleetcap-coordinator"]["spec"]["template"]["spec"]["volumes"]
    claim = next(v for v in volumes if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
    pvc = next(d for d in manifests() if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert [d["metadata"]["name"] for d in manifests() if d["kind"] == "Namespace"] == ["fleetcap"]
    assert {d["metadata"].get("namespace") for d in manifests() if d["kind"] != "Namespace"} == {"fleetcap"}
    policies = {d["metadata"]["name"] for d in manifests() if d["kind"] == "NetworkPolicy"}
    assert policies == {"fleetcap-coordinator", "fleetcap-etcd"}


def test_no_unit_or_manifest_puts_a_secret_or_plaintext_on_a_command_line():
    for path in sorted(DEPLOY.glob("*/*")):
        text = path.read_text()
        assert "AccountKey=" not in text and "SharedAccessSignature=" not in text and "Bearer " not in text, path
        assert "--insecure" not in text, path
        for flag in ("--storage-account", "--webhook-token", "--token"):
            for value in re.findall(rf"{flag}[ =\"',]+([^ \"',\\]+)", text):
                assert value.startswith(("env:", "file:")) or "=env:" in value or "=file:" in value, (path, value)


def test_systemd_units_verify(tmp_path):
    """`systemd-analyze verify` accepts every unit as shipped (with the fleetcap path pointed at
    this checkout's, since /opt/fleetcap does not exist here)."""
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian's systemd) is needed; run make setup"
    fleetcap = str(pathlib.Path(sys.executable).with_name("fleetcap"))
    units = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/fleetcap/.venv/bin/fleetcap", fleetcap))
        units.append(str(copy))
    assert len(units) == 4
    r = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def kustomize(directory: pathlib.Path) -> list[dict]:
    import shutil
    import subprocess
    import sys

    import yaml

    kubectl = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent))
    assert kubectl, "kubectl comes with `make setup` (from Debian's kubernetes-client package, into .venv/bin)"
    r = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_the_kustomize_base_renders_every_manifest():
    rendered = kustomize(DEPLOY / "kubernetes")
    key = lambda d: (d["kind"], d["metadata"]["name"])
    assert sorted(map(key, rendered)) == sorted(map(key, manifests()))
    # Unchanged but for the image tag the base pins.
    by_key = {key(d): d for d in manifests()}
    for doc in rendered:
        assert doc == by_key[key(doc)], key(doc)


def test_an_overlay_sets_the_image_and_keeps_the_rest(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        f"bases: [{os.path.relpath(DEPLOY / 'kubernetes', tmp_path)}]\n"  # kubectl 1.20's kustomize; newer ones also take resources:
        "images: [{name: fleetcap, newName: registry.example/fleetcap, newTag: 0.2.0}]\n"
    )
    rendered = kustomize(tmp_path)
    images = sorted(
        {
            c["image"]
            for d in rendered
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
            for c in d["spec"]["template"]["spec"]["containers"]
        }
    )
    assert images == ["quay.io/coreos/etcd:v3.4.23", "registry.example/fleetcap:0.2.0"]
    assert len(rendered) == len(manifests())


@pytest.mark.parametrize("path", ["systemd/fleetcap-etcd.service", "kubernetes/etcd-statefulset.yaml"])
def test_the_shipped_etcd_compacts_its_history(path):
    """Without compaction a fleet's progress fills etcd's backend within a day, and etcd then
    refuses every write (docs/operations.md, "Compaction"); the embedded etcd's own flags are
    tested against a real etcd in tests/integration/test_etcd_compaction.py."""
    from fleetcap.coordinator.state.embedded_etcd import COMPACTION_RETENTION

    words = (DEPLOY / path).read_text().replace("\\\n", " ").split()
    assert words[words.index("--auto-compaction-mode") + 1] == "periodic"
    assert words[words.index("--auto-compaction-retention") + 1] == COMPACTION_RETENTION
