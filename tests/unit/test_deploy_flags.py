"""Every flag that the systemd units and Kubernetes manifests pass to fleetcap exists in the CLI."""
from __future__ import annotations

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


@pytest.mark.parametrize("path,command", sorted(FILES.items()))
def test_every_flag_exists(path, command):
    text = (DEPLOY / path).read_text()
    # The fleetcap command line only: from "fleetcap <command>" (or the args list) to its end.
    start = text.index(f"fleetcap {command}") if f"fleetcap {command}" in text else text.index(f'"{command}"')
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text[start:]))
    assert flags, f"no flags found in {path}"
    unknown = flags - options_of(command)
    assert unknown == set(), f"{path} passes flags 'fleetcap {command}' does not have: {sorted(unknown)}"
