"""Create-request validation: Azure's rules, defaults and ranges, field by field."""

from __future__ import annotations

import re

import pytest

from fleetcap.coordinator import validation
from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.coordinator.storage.sink import AZURE_CONTAINER
from fleetcap.v1 import captures_pb2 as pb

ACCOUNTS = {"local": AZURE_CONTAINER}


def params(**kw) -> pb.PacketCaptureParameters:
    p = pb.PacketCaptureParameters(
        target="web", target_type="AzureVMSS", storage_location=pb.PacketCaptureStorageLocation(file_path="/var/captures/a.cap")
    )
    for k, v in kw.items():
        if k == "loc":
            p.storage_location.CopyFrom(v)
        elif k == "filters":
            p.filters.extend(v)
        else:
            setattr(p, k, v)
    return p


def test_defaults_are_azures():
    p = validation.validate(params(target_type=""), storage_accounts=ACCOUNTS)
    assert p.target_type == "AzureVM"
    assert p.bytes_to_capture_per_packet == 0
    assert p.total_bytes_per_session == 1073741824
    assert p.time_limit_in_seconds == 18000


def test_zero_limits_are_kept_and_values_normalized():
    p = validation.validate(
        params(
            total_bytes_per_session=0,
            time_limit_in_seconds=0,
            target_type="azurevmss",
            filters=[pb.PacketCaptureFilter(protocol="udp", local_port="53")],
        ),
        storage_accounts=ACCOUNTS,
    )
    assert (p.total_bytes_per_session, p.time_limit_in_seconds, p.target_type) == (0, 0, "AzureVMSS")
    assert p.filters[0].protocol == "UDP"


@pytest.mark.parametrize(
    ("kw", "field", "rule"),
    [
        ({"target": ""}, "target", "is required"),
        ({"target_type": "AzureFunction"}, "targetType", "not one of AzureVM, AzureVMSS"),
        ({"bytes_to_capture_per_packet": -1}, "bytesToCapturePerPacket", "out of range 0..4294967295"),
        ({"bytes_to_capture_per_packet": 4294967296}, "bytesToCapturePerPacket", "out of range"),
        ({"total_bytes_per_session": 4294967296}, "totalBytesPerSession", "out of range 0..4294967295"),
        ({"total_bytes_per_session": 23}, "totalBytesPerSession", "below 24"),
        ({"time_limit_in_seconds": 18001}, "timeLimitInSeconds", "out of range 0..18000"),
        ({"time_limit_in_seconds": -5}, "timeLimitInSeconds", "out of range"),
        ({"loc": pb.PacketCaptureStorageLocation()}, "storageLocation", "needs a storageId, a filePath"),
        ({"loc": pb.PacketCaptureStorageLocation(file_path="/tmp/a.cap")}, "storageLocation.filePath", "must start with /var/captures/"),
        ({"loc": pb.PacketCaptureStorageLocation(file_path="/var/captures/a.pcap")}, "storageLocation.filePath", "must end in .cap"),
        ({"loc": pb.PacketCaptureStorageLocation(file_path="/var/captures/../etc/a.cap")}, "storageLocation.filePath", "'..'"),
        ({"loc": pb.PacketCaptureStorageLocation(storage_id="nope")}, "storageLocation.storageId", "not a configured storage account"),
        (
            {"loc": pb.PacketCaptureStorageLocation(file_path="/var/captures/a.cap", storage_path="https://x/c")},
            "storageLocation.storagePath",
            "needs storageLocation.storageId",
        ),
        (
            {"loc": pb.PacketCaptureStorageLocation(local_path="/var/captures/a.cap")},
            "storageLocation.localPath",
            "only with continuousCapture",
        ),
        ({"filters": [pb.PacketCaptureFilter(protocol="TCP", local_port="1-2;3")]}, "filters[0].localPort", "a range mixed with a list"),
        ({"filters": [pb.PacketCaptureFilter(protocol="UDP"), pb.PacketCaptureFilter()]}, "filters[1]", "cannot be all empty"),
        ({"bpf_filter": "udp " * 1100}, "bpfFilter", "4400 characters; at most 4096"),
        ({"filters": [pb.PacketCaptureFilter(protocol="UDP")] * 33}, "filters", "33 filters; at most 32"),
        (
            {"filters": [pb.PacketCaptureFilter(protocol="UDP", local_port="1;" * 600)]},
            "filters[0].localPort",
            "1200 characters; at most 1024",
        ),
    ],
)
def test_every_invalid_field_is_named(kw, field, rule):
    with pytest.raises(InvalidArgument) as e:
        validation.validate(params(**kw), storage_accounts=ACCOUNTS)
    assert e.value.field == field
    assert rule in str(e.value)


def test_scope_only_with_scale_sets():
    p = params(target_type="AzureVM")
    p.scope.include.append("0")
    with pytest.raises(InvalidArgument) as e:
        validation.validate(p, storage_accounts=ACCOUNTS)
    assert e.value.field == "scope"


def test_continuous_capture_exclusions_and_defaults():
    p = params(continuous_capture=True)
    with pytest.raises(InvalidArgument) as e:
        validation.validate(p, storage_accounts=ACCOUNTS)
    assert e.value.field == "storageLocation.filePath"
    ring = pb.PacketCaptureStorageLocation(local_path="/var/captures/r.cap")
    for kw, field in (({"time_limit_in_seconds": 5}, "timeLimitInSeconds"), ({"total_bytes_per_session": 5000}, "totalBytesPerSession")):
        with pytest.raises(InvalidArgument) as e:
            validation.validate(params(continuous_capture=False, loc=ring, **kw), storage_accounts=ACCOUNTS)
        assert e.value.field == field
    p = validation.validate(params(continuous_capture=False, loc=ring), storage_accounts=ACCOUNTS)
    assert p.continuous_capture is True
    s = p.capture_settings
    assert (s.file_count, s.file_size_in_bytes, s.session_time_limit_in_seconds) == (10, 104857600, 86400)


@pytest.mark.parametrize(
    ("settings", "field", "rule"),
    [
        (pb.PacketCaptureSettings(file_count=10001), "captureSettings.fileCount", "out of range 0..10000"),
        (pb.PacketCaptureSettings(file_size_in_bytes=4294967296), "captureSettings.fileSizeInBytes", "out of range"),
        (pb.PacketCaptureSettings(file_size_in_bytes=40), "captureSettings.fileSizeInBytes", "below 54"),
        (
            pb.PacketCaptureSettings(session_time_limit_in_seconds=604801),
            "captureSettings.sessionTimeLimitInSeconds",
            "out of range 0..604800",
        ),
    ],
)
def test_continuous_settings_ranges(settings, field, rule):
    p = params(continuous_capture=True, loc=pb.PacketCaptureStorageLocation(local_path="/var/captures/r.cap"))
    p.capture_settings.CopyFrom(settings)
    with pytest.raises(InvalidArgument) as e:
        validation.validate(p, storage_accounts=ACCOUNTS)
    assert e.value.field == field
    assert rule in str(e.value)


def test_ring_settings_only_in_continuous_mode():
    p = params()
    p.capture_settings.file_count = 3
    with pytest.raises(InvalidArgument) as e:
        validation.validate(p, storage_accounts=ACCOUNTS)
    assert e.value.field == "captureSettings"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("pc1", True),
        ("a", True),
        ("A.b-c_", True),
        ("x" * 80, True),
        ("x" * 81, False),
        ("-pc", False),
        ("pc-", False),
        ("p c", False),
        ("p/c", False),
        ("", False),
    ],
)
def test_capture_names(name, ok):
    if ok:
        assert validation.validate_name(name) == name
    else:
        with pytest.raises(InvalidArgument) as e:
            validation.validate_name(name)
        assert e.value.field == "name"


def test_filters_compile_in_a_worker_process_with_a_deadline():
    """Rejections name the field; a compile past the deadline fails the create instead of
    stalling the coordinator, and the worker is replaced for the next one."""
    import asyncio

    from fleetcap.coordinator.filter_compiler import FilterCompiler

    async def body():
        compiler = FilterCompiler()
        try:
            p = validation.validate(params(bpf_filter="udp and and"), storage_accounts=ACCOUNTS)
            field, expression, meaning = validation.expressions_to_compile(p)[0]
            with pytest.raises(InvalidArgument) as e:
                await compiler.check(field, expression, meaning)
            assert str(e.value) == "bpfFilter: libpcap rejects it: can't parse filter expression: syntax error"
            await compiler.check("filters", "udp and port 53", "rejected")  # a good one passes
            compiler.timeout_s = 0.000001
            with pytest.raises(InvalidArgument, match=r"filters: too complex: libpcap did not compile it within"):
                await compiler.check("filters", " or ".join(f"host 10.0.{i // 250}.{i % 250}" for i in range(300)), "x")
            compiler.timeout_s = 30
            await compiler.check("filters", "tcp port 80", "rejected")  # a new worker
        finally:
            compiler.close()

    asyncio.run(body())


@pytest.mark.parametrize(
    ("value", "tls", "expected"),
    [
        ("127.0.0.1:2379", False, ("127.0.0.1:2379",)),
        ("http://127.0.0.1:2379", False, ("127.0.0.1:2379",)),
        ("https://e1:2379,https://e2:2379/", True, ("e1:2379", "e2:2379")),
        ("e1, e2:2380", True, ("e1:2379", "e2:2380")),
        ("http://[::1]:2379", False, ("[::1]:2379",)),
    ],
)
def test_etcd_endpoints_in_etcds_own_forms(value, tls, expected):
    from fleetcap.coordinator.settings import parse_etcd_endpoints

    assert parse_etcd_endpoints(value, tls=tls) == expected


def test_plaintext_etcd_beyond_loopback_is_refused_before_dialling():
    from fleetcap.coordinator.settings import parse_etcd_endpoints

    with pytest.raises(ValueError, match="not a local address") as e:
        parse_etcd_endpoints("127.0.0.1:2379,http://etcd.example:2379", tls=False)
    assert str(e.value) == (
        "--etcd etcd.example:2379: not a local address, and there is no --etcd-ca; give --etcd-ca "
        "(with --etcd-cert and --etcd-key) to reach etcd over TLS, or --insecure to send "
        "plaintext, ETCD_PASSWORD included"
    )
    assert parse_etcd_endpoints("e1:2379", tls=False, insecure=True) == ("e1:2379",)


@pytest.mark.parametrize(
    ("value", "tls", "message"),
    [
        ("https://e1:2379", False, "--etcd: https:// endpoints need --etcd-ca"),
        ("http://e1:2379", True, "--etcd: http:// is plaintext, but --etcd-ca asks for TLS"),
        ("unix://x", False, "--etcd: 'unix://x': the scheme must be http:// or https://"),
        ("http://e1:2379/v3", False, "--etcd: 'http://e1:2379/v3' is not host:port or a URL of one"),
        ("e1:2379", False, "--etcd e1:2379: not a local address, and there is no --etcd-ca"),
        ("e1:99999", False, "--etcd: 'e1:99999' is not host:port"),
        ("::1:2379", False, "--etcd: '::1:2379': write an IPv6 address as [addr]:port"),
        (",", False, "--etcd: give at least one endpoint"),
    ],
)
def test_etcd_endpoints_refused_with_the_flag_named(value, tls, message):
    from fleetcap.coordinator.settings import parse_etcd_endpoints

    with pytest.raises(ValueError, match=re.escape(message)) as e:
        parse_etcd_endpoints(value, tls=tls)
    assert str(e.value).startswith(message)
