"""The CLI's az-compatible parsing and its progress rendering, without a server."""

from __future__ import annotations

import argparse
import datetime

import pytest

from fleetcap.clients import cli, progress
from fleetcap.v1 import captures_pb2 as pb


def parse_create(*flags: str):
    args = cli.build_parser()[0].parse_args(["capture", "create", "--name", "pc", *flags])
    cli.merge_newer_group_flags(args)
    return args


def test_newer_group_json_flags_fill_the_classic_ones():
    args = parse_create(
        "--target",
        "web",
        "--target-type",
        "AzureVMSS",
        "--scope",
        '{"include": [0, "2"]}',
        "--storage-location",
        '{"storageId": "local", "filePath": "/var/captures/a.cap"}',
        "--capture-settings",
        '{"file-count": 3, "fileSizeInBytes": 1000}',
        "--bytes-to-capture-per-packet",
        "64",
        "--total-bytes",
        "500",
        "--time-limit-in-seconds",
        "9",
    )
    assert (args.include, args.exclude) == (["0", "2"], None)
    assert (args.storage_account, args.file_path, args.storage_path) == ("local", "/var/captures/a.cap", None)
    assert (args.file_count, args.file_size, args.session_time_limit) == (3, 1000, None)
    assert (args.capture_size, args.capture_limit, args.time_limit) == (64, 500, 9)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--scope", "[1]"), "--scope: must be a JSON object"),
        (("--scope", '{"includes": []}'), "--scope: unknown key 'includes' (known: exclude, include)"),
        (("--capture-settings", '{"fileCount": "3"}'), "--capture-settings: fileCount must be int"),
        (("--storage-location", '{"filePath": 3}'), "--storage-location: filePath must be str"),
        (
            ("--file-path", "/var/captures/b.cap", "--storage-location", '{"filePath": "/var/captures/a.cap"}'),
            "--storage-location: filePath is also given as --file-path",
        ),
        (("--scope", "{nope"), "--scope: not valid JSON"),
    ],
)
def test_newer_group_json_flags_reject_bad_input_by_name(flags, message):
    with pytest.raises(cli.UsageError) as e:
        parse_create(*flags)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("verb", ["show", "stop", "delete", "show-status", "query-status", "wait"])
def test_az_watcher_flags_are_accepted(verb):
    args = cli.build_parser()[0].parse_args(["capture", verb, "-n", "pc", "-l", "westeurope", "-g", "NetworkWatcherRG"])
    assert args.name == "pc"
    assert args.location == "westeurope"


def test_tsv_prints_the_table_columns_without_header(capsys):
    cli.emit(
        [{"name": "a", "properties": {"target": "t1"}}, {"name": "b"}],
        argparse.Namespace(output="tsv"),
        [("N", "name"), ("T", "properties.target")],
    )
    assert capsys.readouterr().out == "a\tt1\nb\t\n"


def test_progress_lines_show_bars_against_the_limits():
    capture = pb.PacketCaptureResult(
        name="pc", properties=pb.PacketCaptureParameters(total_bytes_per_session=4096, time_limit_in_seconds=10)
    )
    status = pb.PacketCaptureQueryStatusResult(
        name="pc",
        packet_capture_status="Running",
        instances=[
            pb.InstanceStatus(
                id="/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/0",
                instance_id="0",
                packet_capture_status="Running",
                capture_start_time="2026-11-26T10:00:00Z",
                packets_captured=1234,
                bytes_captured=1024,
                kernel_drops=2,
                interface_drops=1,
            ),
            pb.InstanceStatus(
                id="/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm7",
                instance_id="vm7",
                packet_capture_status="Stopped",
                stop_reason="TotalBytesExceeded",
                capture_start_time="2026-11-26T10:00:00Z",
                capture_stop_time="2026-11-26T10:00:02Z",
                bytes_captured=8192,
                files=[pb.CaptureFile(storage_path="file:///x", size_bytes=8192, uploaded_bytes=4096)],
            ),
        ],
    )
    now = datetime.datetime(2026, 11, 26, 10, 0, 5, tzinfo=datetime.UTC)
    assert progress.render(capture, status, now) == [
        "pc: Running",
        "web_0     Running    packets     1,234  bytes [#####---------------]  25% 1.0 KiB/4.0 KiB  "
        "time [##########----------]  50% 5s/10s  drops 3",
        "vm7       Stopped    packets         0  bytes [####################] 100% 8.0 KiB/4.0 KiB  "
        "time [####----------------]  20% 2s/10s  drops 0  stored 4.0 KiB/8.0 KiB  TotalBytesExceeded",
    ]


def test_progress_without_limits_shows_plain_figures():
    capture = pb.PacketCaptureResult(name="pc", properties=pb.PacketCaptureParameters())
    status = pb.PacketCaptureQueryStatusResult(
        name="pc",
        packet_capture_status="NotStarted",
        instances=[pb.InstanceStatus(id="vm1", instance_id="vm1", packet_capture_status="NotStarted")],
    )
    now = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)
    assert progress.render(capture, status, now)[1] == "vm1       NotStarted packets         0  bytes 0 B  time 0s  drops 0"


def test_every_create_option_reaches_the_request():
    """CreateOptions is the one definition of create's arguments: each of them changes the
    request (none is silently dropped), and both clients take exactly these."""
    import inspect

    from fleetcap.clients import sdk

    values = {
        "target_type": "AzureVMSS",
        "resource_group": "rg9",
        "subscription": "s9",
        "include": ["1"],
        "exclude": ["2"],
        "bytes_to_capture_per_packet": 64,
        "total_bytes_per_session": 4096,
        "time_limit_in_seconds": 9,
        "storage_account": "local",
        "storage_path": "https://x/c",
        "file_path": "/var/captures/a.cap",
        "filters": [{"protocol": "UDP"}],
        "bpf_filter": "udp",
        "continuous_capture": False,
        "local_path": "/var/captures/r.cap",
        "file_count": 3,
        "file_size_in_bytes": 1000,
        "session_time_limit_in_seconds": 60,
        "add_new_instances": True,
        "standby_in_seconds": 30,
        "standby_bytes": 8 << 20,
        "fleet_bytes_limit": 1 << 30,
    }
    assert sorted(values) == sorted(sdk.CreateOptions.__annotations__)
    base = sdk.create_request(name="pc", target="t")
    for key, value in values.items():
        assert sdk.create_request(name="pc", target="t", **{key: value}) != base, key
    for client in (sdk.Client, sdk.AsyncClient):
        params = inspect.signature(client.create).parameters
        assert [p for p in params if p != "self"] == ["name", "target", "options"], client


def test_a_bad_log_level_is_a_usage_error_not_a_traceback(capsys):
    import pytest

    from fleetcap.clients import cli

    with pytest.raises(SystemExit) as e:
        cli.build_parser()[0].parse_args(["--log-level", "foo", "capture", "list"])
    assert e.value.code == 2
    assert "argument --log-level: invalid choice: 'FOO'" in capsys.readouterr().err
    assert cli.build_parser()[0].parse_args(["--log-level", "debug", "capture", "list"]).log_level == "DEBUG"


# -- global options anywhere, as az's ----------------------------------------------------------------


def _parse(*argv: str):
    from fleetcap.clients.cli import globals_anywhere
    from fleetcap.main import build_parser

    return globals_anywhere(build_parser()).parse_args(list(argv))


def test_global_options_come_before_or_after_the_verb():
    assert _parse("capture", "show-status", "-n", "pc1", "-o", "table").output == "table"
    assert _parse("-o", "table", "capture", "show-status", "-n", "pc1").output == "table"
    assert _parse("capture", "show-status", "-n", "pc1").output == "json"
    assert _parse("agents", "list", "-o", "tsv").output == "tsv"
    args = _parse("capture", "list", "--coordinator", "unix:/x.sock", "--log-level", "debug", "--insecure")
    assert (args.coordinator, args.log_level, args.insecure) == ("unix:/x.sock", "DEBUG", True)
    # After the verb wins over before it, as the last word on a line does.
    assert _parse("-o", "json", "capture", "list", "-o", "tsv").output == "tsv"


def test_daemons_take_only_the_output_and_log_options_and_keep_their_own():
    args = _parse("coordinator", "--log-level", "warning")
    assert args.log_level == "WARNING"
    gw = _parse("gateway", "--tls-cert", "gw.pem", "--tls-key", "gw-key.pem")
    assert (gw.tls_cert, gw.tls_key) == ("gw.pem", "gw-key.pem")  # the gateway's own HTTPS certificate
    with pytest.raises(SystemExit) as e:
        _parse("coordinator", "--token", "env:X")  # a client's credential means nothing to a coordinator
    assert e.value.code == 2


# -- az's output options: -o json|jsonc|yaml|yamlc|table|tsv|none and --query ---------------------------

CAPTURES = [
    {"name": "pc1", "properties": {"target": "/x/vm1", "targetType": "AzureVM"}, "createdTime": "t1", "provisioningState": "Succeeded"},
    {"name": "pc2", "properties": {"target": "/x/web", "targetType": "AzureVMSS"}, "createdTime": "t2", "provisioningState": "Succeeded"},
]


def _out(capsys, *argv: str, data=CAPTURES) -> str:
    from fleetcap.clients import cli

    args = _parse("capture", "list", *argv)
    cli.emit(data, args, cli.CAPTURE_TABLE)
    return capsys.readouterr().out


def test_output_formats(capsys):
    import json as _json

    assert _json.loads(_out(capsys)) == CAPTURES
    assert _json.loads(_out(capsys, "-o", "jsonc")) == CAPTURES  # not a terminal: plain JSON
    assert _out(capsys, "-o", "yaml").startswith("- name: pc1\n  properties:\n    target: /x/vm1\n")
    assert _out(capsys, "-o", "none") == ""
    assert _out(capsys, "-o", "tsv") == "pc1\t/x/vm1\tAzureVM\tt1\tSucceeded\npc2\t/x/web\tAzureVMSS\tt2\tSucceeded\n"
    assert _out(capsys, "-o", "table").splitlines()[0].split() == ["Name", "Target", "Type", "Created", "State"]


def test_query_is_jmespath_and_shapes_the_table(capsys):
    import json as _json

    assert _json.loads(_out(capsys, "--query", "[].name")) == ["pc1", "pc2"]
    assert _out(capsys, "-o", "tsv", "--query", "[?properties.targetType=='AzureVMSS'].name") == "pc2\n"
    table = _out(capsys, "-o", "table", "--query", "[].{name: name, kind: properties.targetType}").splitlines()
    assert [line.split() for line in table] == [["Name", "Kind"], ["----", "---------"], ["pc1", "AzureVM"], ["pc2", "AzureVMSS"]]
    assert _out(capsys, "-o", "yaml", "--query", "length(@)") == "2\n...\n"


def test_a_bad_query_names_the_option():
    from fleetcap.clients import cli

    with pytest.raises(cli.QueryError, match=r"^--query: "):
        cli.emit(CAPTURES, _parse("capture", "list", "--query", "[?name=="), cli.CAPTURE_TABLE)


def test_version_only_show_errors_and_subscription_anywhere(capsys):
    with pytest.raises(SystemExit) as e:
        _parse("--version")
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("fleetcap ")
    assert _parse("capture", "show-status", "-n", "pc1", "--only-show-errors").only_show_errors is True
    assert _parse("capture", "show-status", "-n", "pc1", "--subscription", "s1").subscription == "s1"
    assert _parse("coordinator", "--only-show-errors").only_show_errors is True


def test_json_logs_are_one_object_a_line():
    import json as _json
    import logging

    from fleetcap.core.logs import JsonLogFormatter

    record = logging.LogRecord("fleetcap.x", logging.WARNING, __file__, 1, "capture %s: %d drops", ("pc1", 3), None)
    record.created = 1796227200.25
    assert _json.loads(JsonLogFormatter().format(record)) == {
        "time": "2026-12-02T16:00:00.250Z",
        "level": "WARNING",
        "logger": "fleetcap.x",
        "message": "capture pc1: 3 drops",
    }
    assert _parse("coordinator", "--log-format", "json").log_format == "json"
    assert _parse("capture", "list", "--log-format", "json").log_format == "json"


# -- --config FILE ---------------------------------------------------------------------------------


def _with_config(tmp_path, text: str, *argv: str):
    from fleetcap.clients.cli import apply_config, globals_anywhere
    from fleetcap.main import build_parser

    path = tmp_path / "fleetcap.toml"
    path.write_text(text)
    parser = globals_anywhere(build_parser())
    apply_config(parser, ["--config", str(path), *argv])
    return parser.parse_args(["--config", str(path), *argv])


def test_a_config_file_sets_any_flag_and_the_command_line_wins(tmp_path):
    text = """
log-level = "warning"
output = "table"
[coordinator]
listen = ["unix:/run/fleetcap/api.sock", "0.0.0.0:7770"]
auth-file = "/etc/fleetcap/auth.toml"
agent-ttl = 20
insecure = false
[gateway]
listen = "[::]:8443"
webhook-token = "file:/etc/fleetcap/webhook.token"
[capture.create]
time-limit = 300
"""
    c = _with_config(tmp_path, text, "coordinator")
    assert (c.listen, c.auth_file, c.agent_ttl, c.insecure, c.log_level) == (
        ["unix:/run/fleetcap/api.sock", "0.0.0.0:7770"],
        "/etc/fleetcap/auth.toml",
        20,
        False,
        "WARNING",
    )
    assert _with_config(tmp_path, text, "coordinator", "--agent-ttl", "5").agent_ttl == 5
    g = _with_config(tmp_path, text, "gateway")
    assert (g.listen, g.webhook_token) == ("[::]:8443", "file:/etc/fleetcap/webhook.token")
    cr = _with_config(tmp_path, text, "capture", "create", "-n", "pc1", "--vm", "vm1")
    assert (cr.time_limit, cr.output) == (300, "table")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[coordinator]\nlisen = ['x']\n", "[coordinator].lisen: not a flag of this command"),
        ("[coordinator]\nagent-ttl = 'soon'\n", "coordinator.agent-ttl: 'soon' is not valid"),
        ("[coordinator]\ninsecure = 'yes'\n", "coordinator.insecure: must be true or false"),
        ("[coordinator]\nauth-file = ['a', 'b']\n", "coordinator.auth-file: takes one value, not a list"),
        ("output = 'xml'\n", "output: 'xml' is not one of json"),
        ("[nothing]\nx = 1\n", "nothing: no command 'nothing' here"),
        ("[global]\nvm = 'vm1'\n", "global.vm: not a flag of this command"),
        ("listen = \n", "is not valid TOML"),
    ],
)
def test_a_bad_config_names_the_file_the_table_and_the_key(tmp_path, text, message):
    from fleetcap.clients.cli import UsageError

    with pytest.raises(UsageError) as e:
        _with_config(tmp_path, text, "coordinator")
    assert str(e.value).startswith("--config: ")
    assert message.replace("[coordinator].", "coordinator.") in str(e.value)


def test_a_missing_config_file_is_exit_2(tmp_path, capsys):
    from fleetcap.main import main

    assert main(["--config", str(tmp_path / "none.toml"), "capture", "list"]) == 2
    assert capsys.readouterr().err.startswith(f"fleetcap: error: --config: cannot read {tmp_path}/none.toml")


@pytest.mark.parametrize("output", ["table", "tsv"])
def test_text_an_agent_chose_cannot_drive_the_terminal(output, capsys):
    agents = [
        {
            "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm1",
            "hostname": "evil\x1b[2J\x1b[31mhost",
            "interface": "eth0\tx\ny",
            "connectedTime": "2026-12-08T00:00:00Z",
        }
    ]
    cli.emit(agents, argparse.Namespace(output=output), cli.AGENT_TABLE)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.count("\n") == (3 if output == "table" else 1)
    assert "evil\\x1b[2J\\x1b[31mhost" in out
    assert "eth0\\tx\\ny" in out
    if output == "tsv":
        assert out.rstrip("\n").split("\t")[1:3] == ["evil\\x1b[2J\\x1b[31mhost", "eth0\\tx\\ny"]
