"""The storage contract (coordinator/storage/sink.py), which every backend passes: the built-in
local account on a directory, Azure Blob against a real Azurite, S3 against moto's server with
its authentication on, and each kind added after them (a subclass of SinkContract with a `sink`
fixture). Exact bytes, exact offsets, exact errors."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import uuid

import pytest

from deploy.localfleet import AZURITE, AZURITE_KEY
from fleetcap.coordinator.settings import StorageAccount
from fleetcap.coordinator.storage import registry
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.coordinator.storage.sink import Committed, IntegrityError, OffsetMismatch, Sink
from fleetcap.coordinator.validation import DEFAULT_CONTAINER
from fleetcap.core.vocabulary import LOCAL_ACCOUNT, StorageKind
from tests.ports import bound_port

pytestmark = pytest.mark.integration

MIB = 1 << 20


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that differ at every offset, so a misplaced chunk cannot go unseen."""
    return hashlib.shake_256(f"{seed}".encode()).digest(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SinkContract:
    """What the coordinator's upload path relies on. `sink` is a fresh backend per test."""

    kind: StorageKind

    def name(self) -> str:
        return f"{DEFAULT_CONTAINER}/contract/{uuid.uuid4().hex}/vm1.cap"

    def write_all(self, writer, data: bytes, chunk: int = 256 * 1024, start: int = 0) -> None:
        for off in range(start, len(data), chunk):
            writer.write(off, data[off : off + chunk])

    def test_the_kind_and_the_default_container(self, sink: Sink):
        assert sink.kind is self.kind
        assert sink.container_rule.allows(DEFAULT_CONTAINER)
        assert not sink.container_rule.allows("../etc")

    def test_a_file_written_in_order_is_stored_and_committed_exactly(self, sink: Sink):
        name, data = self.name(), pattern(9 * MIB + 123)
        w = sink.open(name)
        assert w.open() == 0
        assert w.committed() is None
        self.write_all(w, data)
        assert w.flush() == len(data)
        assert w.durable_size() == len(data)
        committed = w.commit(len(data), sha(data))
        w.close()
        assert committed == Committed(sink.uri(name), len(data), sha(data))
        assert sink.open(name).committed() == committed
        assert sink.read(name, 0, len(data) + 10) == data
        assert sink.read(name, 5 * MIB - 7, 1000) == data[5 * MIB - 7 : 5 * MIB + 993]
        assert sink.read(name, len(data), 10) == b""

    def test_a_chunk_out_of_order_is_refused_and_nothing_moves(self, sink: Sink):
        name, data = self.name(), pattern(3000, seed=1)
        w = sink.open(name)
        w.open()
        w.write(0, data[:1000])
        for wrong in (0, 999, 1001, 5000):
            with pytest.raises(OffsetMismatch) as e:
                w.write(wrong, data[1000:2000])
            assert e.value.expected == 1000
        w.write(1000, data[1000:])
        assert w.commit(3000, sha(data)).size == 3000
        w.close()
        assert sink.read(name, 0, 4000) == data

    def test_a_new_writer_resumes_from_the_durable_size(self, sink: Sink):
        name, data = self.name(), pattern(6 * MIB + 5, seed=2)
        first = sink.open(name)
        first.open()
        self.write_all(first, data[: 4 * MIB + 17])
        durable = first.flush()
        assert durable == 4 * MIB + 17
        first.close()  # the stream broke; the agent reconnects
        second = sink.open(name)
        resumed = second.open()
        assert durable - sink.resend_at_most <= resumed <= durable  # S3: from its last full part
        assert resumed > 0 or sink.resend_at_most >= durable
        self.write_all(second, data, start=resumed)
        assert second.commit(len(data), sha(data)) == Committed(sink.uri(name), len(data), sha(data))
        second.close()
        assert sink.read(name, 0, len(data)) == data

    def test_a_restart_discards_what_is_stored(self, sink: Sink):
        name, old, new = self.name(), pattern(5 * MIB, seed=3), pattern(1000, seed=4)
        w = sink.open(name)
        w.open()
        self.write_all(w, old)
        w.flush()
        w.close()
        again = sink.open(name)
        assert again.open(restart=True) == 0
        again.write(0, new)
        assert again.commit(len(new), sha(new)).size == len(new)
        again.close()
        assert sink.read(name, 0, 10 * MIB) == new

    @pytest.mark.parametrize("wrong", ["size", "sha256"])
    def test_a_copy_that_differs_from_the_agents_file_is_never_committed(self, sink: Sink, wrong: str):
        name, data = self.name(), pattern(2 * MIB, seed=5)
        w = sink.open(name)
        w.open()
        self.write_all(w, data)
        with pytest.raises(IntegrityError):
            w.commit(len(data) + (1 if wrong == "size" else 0), sha(data) if wrong == "size" else sha(b"other"))
        w.close()
        assert sink.open(name).committed() is None

    def test_delete_removes_a_committed_or_a_partial_object(self, sink: Sink):
        done, partial, data = self.name(), self.name(), pattern(1000, seed=6)
        w = sink.open(done)
        w.open()
        w.write(0, data)
        w.commit(len(data), sha(data))
        w.close()
        p = sink.open(partial)
        p.open()
        p.write(0, data)
        p.flush()
        p.close()
        for name in (done, partial, self.name()):  # the last never existed: deleting it is no error
            sink.delete(name)
            assert sink.open(name).committed() is None
            assert sink.read(name, 0, 10) == b""
        fresh = sink.open(partial)
        assert fresh.open() == 0  # nothing of the partial upload is left to resume from
        fresh.close()

    def test_where_objects_go_carries_no_credential(self, sink: Sink, secret: str):
        name = self.name()
        for shown in (sink.endpoint(), sink.uri(name)):
            assert "sig=" not in shown
            if secret:
                assert secret not in shown


class TestLocalSink(SinkContract):
    kind = StorageKind.LOCAL

    @pytest.fixture
    def sink(self, tmp_path):
        return registry.build_sinks(str(tmp_path), ())[LOCAL_ACCOUNT]

    @pytest.fixture
    def secret(self):
        return ""

    def test_an_object_name_cannot_leave_the_directory(self, tmp_path):
        sink = LocalSink(str(tmp_path / "storage"))
        for name in ("../outside/x.cap", "network-watcher-logs/../../x.cap", "x.cap", "/etc/passwd"):
            with pytest.raises(Exception, match="escapes the storage directory"):
                sink.open(name)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite on loopback, on a port the OS gave it (it prints which); stopped by its PID."""
    if not os.path.exists(AZURITE):
        pytest.skip("Azurite is not installed; run 'make setup'")
    where = tmp_path_factory.mktemp("azurite")
    log_path = str(where / "azurite.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                AZURITE,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--location",
                str(where),
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        port = bound_port(log_path, r"listens on http://127\.0\.0\.1:(\d+)", what="Azurite's port", proc=proc)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TestBlobSink(SinkContract):
    kind = StorageKind.AZURE_BLOB

    @pytest.fixture
    def sink(self, azurite, monkeypatch):
        monkeypatch.setenv("FLEETCAP_TEST_BLOB", azurite)
        account = StorageAccount(kind=StorageKind.AZURE_BLOB, name="archive", secret="env:FLEETCAP_TEST_BLOB")
        return registry.sink_for(account)

    @pytest.fixture
    def secret(self):
        return AZURITE_KEY


class TestS3Sink(SinkContract):
    kind = StorageKind.S3

    @pytest.fixture
    def sink(self, s3_server, monkeypatch):
        monkeypatch.setenv("FLEETCAP_TEST_S3", s3_server[0])
        return registry.sink_for(StorageAccount(kind=StorageKind.S3, name="s3", secret="env:FLEETCAP_TEST_S3"))

    @pytest.fixture
    def secret(self, s3_server):
        return s3_server[1]

    def test_a_wrong_secret_is_refused_by_the_server(self, s3_server):
        from fleetcap.coordinator.storage.s3_sink import S3Sink
        from fleetcap.coordinator.storage.sink import SinkError

        forged = re.sub(r"SecretAccessKey=[^;]+", "SecretAccessKey=not-the-secret", s3_server[0])
        with pytest.raises(SinkError, match="SignatureDoesNotMatch"):
            S3Sink(forged).open(self.name()).open()

    def test_a_connection_string_is_checked_naming_the_field_never_the_secret(self):
        from fleetcap.coordinator.storage.s3_sink import parse_connection_string

        for text, message in (
            ("Bucket=b", "S3Endpoint is required"),
            ("S3Endpoint=https://h", "Bucket is required"),
            ("S3Endpoint=https://h;Bucket=b;AccessKeyId=K", "AccessKeyId and SecretAccessKey go together"),
            ("S3Endpoint=https://h;Bucket=b;Password=hunter2", "'Password' is not one of"),
        ):
            with pytest.raises(ValueError, match=message) as e:
                parse_connection_string(text)
            assert "hunter2" not in str(e.value)
