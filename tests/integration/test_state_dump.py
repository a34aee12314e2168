"""`fleetcap state`: the records in etcd (binary protobuf) printed as JSON lines, read only."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from google.protobuf import json_format

from fleetcap import main as fleetcap_main
from fleetcap.clients import cli
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.store import Store
from tests.store_contract import capture

pytestmark = pytest.mark.integration


@pytest.fixture
def root(monkeypatch):
    """A key space of this test's own inside the shared etcd."""
    root = f"/fleetcap-test-{uuid.uuid4().hex[:8]}/v1/"
    names = ("ROOT", "CAPTURES", "INSTANCES", "AGENTS", "FETCHES", "BUDGETS", "LEADER")
    suffixes = {name: getattr(keys, name)[len(keys.ROOT) :] for name in names}
    for name, suffix in suffixes.items():
        monkeypatch.setattr(keys, name, root + suffix)
    return root


def flags(etcd):
    t = etcd.client_tls
    return ["--etcd", etcd.endpoint, "--etcd-ca", t.ca, "--etcd-cert", t.cert, "--etcd-key", t.key]


def test_state_prints_every_record_as_json(etcd_endpoint, root, capsys):
    rec, insts = capture("web", "local/rg/vm/a", "local/rg/vm/b")
    insts[1].status.packet_capture_status = "Running"

    async def write():
        t = etcd_endpoint.client_tls
        store = Store(EtcdKV([etcd_endpoint.endpoint], access=EtcdAccess(t.ca, t.cert, t.key)))
        await store.create_capture(rec, insts)
        # an instance record as a coordinator before 2026-12-03 wrote it: JSON
        old = keys.instance("old", "local/rg/vm/c")
        await store.kv.put_if([(old, json_format.MessageToJson(insts[0], indent=None).encode())], {old: 0})
        await store.kv.put_if([(keys.LEADER, b"replica-1")], {keys.LEADER: 0})
        await store.close()

    asyncio.run(write())

    assert fleetcap_main.main(["state", *flags(etcd_endpoint)]) == cli.EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"key": f"{root}captures/web", "record": json_format.MessageToDict(rec)},
        {"key": f"{root}instances/old/local/rg/vm/c", "record": json_format.MessageToDict(insts[0])},
        {"key": f"{root}instances/web/local/rg/vm/a", "record": json_format.MessageToDict(insts[0])},
        {"key": f"{root}instances/web/local/rg/vm/b", "record": json_format.MessageToDict(insts[1])},
        {"key": f"{root}leader", "value": "replica-1"},
    ]
    assert lines[3]["record"]["status"]["packetCaptureStatus"] == "Running"

    assert fleetcap_main.main(["state", "instances/web/", *flags(etcd_endpoint)]) == cli.EXIT_OK
    assert [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()] == [
        f"{root}instances/web/local/rg/vm/a",
        f"{root}instances/web/local/rg/vm/b",
    ]


def test_state_names_the_flag_of_a_missing_certificate(etcd_endpoint, capsys):
    args = flags(etcd_endpoint)
    args[args.index("--etcd-key") + 1] = "/nonexistent/client-key.pem"
    assert fleetcap_main.main(["state", *args]) == cli.EXIT_INVALID
    assert capsys.readouterr().err == "fleetcap: error: --etcd-key /nonexistent/client-key.pem: no such file\n"


def test_state_says_when_etcd_does_not_answer(monkeypatch, capsys, refused_port):
    monkeypatch.setattr(fleetcap_main, "STATE_READ_S", 1.0)
    port = refused_port  # nothing listens there
    assert fleetcap_main.main(["state", "--etcd", f"127.0.0.1:{port}"]) == cli.EXIT_ERROR
    assert capsys.readouterr().err == f"fleetcap: error: --etcd 127.0.0.1:{port}: etcd does not answer after 1 s\n"
