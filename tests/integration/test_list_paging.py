"""List in pages over a real coordinator and etcd: gRPC page tokens, the CLI's --max-items and
--next-token (az's paging flags), and the REST API's nextLink (ARM's), each checked for exact
pages, no capture twice or missed, and a clean error for a token that was never issued."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import pytest

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from tests.integration.conftest import ROOT
from tests.integration.gateway_support import Gateway

pytestmark = pytest.mark.integration

NAMES = [f"page-{i:02d}" for i in range(7)]


@pytest.fixture(scope="module")
def captures(coordinator):
    with sdk.Client(coordinator) as c:
        for name in NAMES:
            c.create(
                name=name,
                target="vm1",
                resource_group="rg1",
                file_path=f"/var/captures/{name}.cap",
                time_limit_in_seconds=1,
                filters=[{"protocol": "UDP", "localPort": "9"}],
            )
    return coordinator


def test_grpc_pages_in_name_order_and_every_capture_once(captures):
    with sdk.Client(captures) as c:
        pages, token = [], ""
        while True:
            page, token = c.list_page(page_size=3, page_token=token)
            pages.append([p.name for p in page])
            if not token:
                break
        assert pages == [NAMES[0:3], NAMES[3:6], NAMES[6:7]]
        assert [p.name for p in c.list()] == NAMES  # every page, fetched for the caller
        with pytest.raises(sdk.InvalidCapture) as e:
            c.list_page(page_size=3, page_token="not-a-token")
        assert e.value.message == "page_token: is not a token this service issued (pass next_page_token as it came)"
        with pytest.raises(sdk.InvalidCapture) as e:
            c.list_page(page_size=1001)
        assert e.value.code == ErrorCode.INVALID_ARGUMENT
        assert e.value.message == "page_size: must be from 1 to 1000 (0: every capture at once)"


def cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetcap", "--coordinator", address, "capture", "list", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_max_items_and_next_token(captures):
    r = cli(captures, "--max-items", "5", "--query", "[].name")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == NAMES[:5]
    prefix = "fleetcap: more captures follow; continue with --next-token "
    assert r.stderr.startswith(prefix)
    assert r.stderr.endswith("\n")
    token = r.stderr[len(prefix) : -1]
    r = cli(captures, "--next-token", token, "--query", "[].name")
    assert r.returncode == 0 and json.loads(r.stdout) == NAMES[5:] and r.stderr == "", r.stderr
    r = cli(captures, "--max-items", "0")
    assert (r.returncode, r.stderr) == (2, "fleetcap: error: --max-items: must be at least 1\n")
    r = cli(captures, "--next-token", "bogus")
    assert r.returncode == 2
    assert "page_token: is not a token this service issued" in r.stderr


def test_rest_list_follows_next_link(captures, tmp_path):
    g = Gateway(captures, tmp_path)
    try:
        base = (
            "/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/"
            "NetworkWatcher_local/packetCaptures"
        )
        path, pages = f"{base}?api-version=2024-05-01&$top=3", []
        while path:
            status, body = g.call("GET", path)
            assert status == 200, body
            pages.append([v["name"] for v in body["value"]])
            link = body.get("nextLink")
            if link:
                parts = urllib.parse.urlsplit(link)
                assert f"{parts.scheme}://{parts.netloc}" == g.base
                assert ("api-version", "2024-05-01") in urllib.parse.parse_qsl(parts.query)
                path = parts.path + "?" + parts.query
            else:
                path = ""
        assert pages == [NAMES[0:3], NAMES[3:6], NAMES[6:7]]
        status, body = g.call("GET", f"{base}?$skipToken=x")
        assert status == 400
        assert body["error"] == {
            "code": "InvalidParameter",
            "message": "$skipToken: is not a token this service issued (follow nextLink as it came)",
        }
        status, body = g.call("GET", f"{base}?$top=0")
        assert status == 400
        assert body["error"]["message"] == "$top: must be a whole number from 1 to 1000"
        status, body = g.call("GET", base)  # the default page holds them all here
        assert status == 200
        assert [v["name"] for v in body["value"]] == NAMES
        assert "nextLink" not in body
    finally:
        g.stop()
