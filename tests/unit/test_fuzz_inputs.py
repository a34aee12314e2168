"""Every entry point that takes outside input, fuzzed with hypothesis: the create request, the
filters, the ARM body, the alert webhooks, the auth file and the rules file. Each answers with
its own clean error (naming a field) or a result, never with anything else: an unexpected
exception would be a 5xx or a traceback to the caller."""

from __future__ import annotations

import json
import string

import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcap.clients import sdk
from fleetcap.clients.rest import alerts, arm
from fleetcap.coordinator import validation
from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.coordinator.storage.sink import AZURE_CONTAINER
from fleetcap.core import auth, filters
from fleetcap.v1 import captures_pb2 as pb

# Derandomized: the same examples on every run, so CI is repeatable; a failure names its input.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
FIELD_TEXT = st.text(alphabet=string.printable + "é\x00;-/:.", max_size=40)
U64 = st.integers(min_value=0, max_value=2**64 - 1)


def integers_for(field) -> st.SearchStrategy[int]:
    """Every value the protobuf field's type can hold."""
    kind = {
        FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
        FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
        FD.CPPTYPE_UINT32: (0, 2**32 - 1),
        FD.CPPTYPE_UINT64: (0, 2**64 - 1),
    }[field.cpp_type]
    return st.integers(*kind)


@st.composite
def capture_parameters(draw) -> pb.PacketCaptureParameters:
    p = pb.PacketCaptureParameters(
        target=draw(FIELD_TEXT),
        target_type=draw(st.sampled_from(["", "AzureVM", "azurevmss", "x", draw(FIELD_TEXT)])),
        bpf_filter=draw(st.text(max_size=60)),
        add_new_instances=draw(st.booleans()),
    )
    for field in ("bytes_to_capture_per_packet", "total_bytes_per_session", "time_limit_in_seconds"):
        if draw(st.booleans()):
            setattr(p, field, draw(integers_for(p.DESCRIPTOR.fields_by_name[field])))
    if draw(st.booleans()):
        p.continuous_capture = draw(st.booleans())
        s = p.capture_settings
        for field in ("file_count", "file_size_in_bytes", "session_time_limit_in_seconds"):
            setattr(s, field, draw(integers_for(s.DESCRIPTOR.fields_by_name[field])))
    loc = p.storage_location
    loc.storage_id, loc.storage_path = draw(st.sampled_from(["", "local", "nope", "a/b/local"])), draw(FIELD_TEXT)
    loc.file_path = draw(st.sampled_from(["", "/var/captures/a.cap", "/var/captures/../x.cap", draw(FIELD_TEXT)]))
    loc.local_path = draw(st.sampled_from(["", "/var/captures/r.cap", draw(FIELD_TEXT)]))
    p.scope.include.extend(draw(st.lists(FIELD_TEXT, max_size=3)))
    p.scope.exclude.extend(draw(st.lists(FIELD_TEXT, max_size=3)))
    for _ in range(draw(st.integers(0, 3))):
        p.filters.add(
            protocol=draw(st.sampled_from(["", "TCP", "udp", "Any", "ICMP", "x"])),
            local_ip_address=draw(FIELD_TEXT),
            remote_ip_address=draw(FIELD_TEXT),
            local_port=draw(FIELD_TEXT),
            remote_port=draw(FIELD_TEXT),
        )
    return p


@FUZZ
@given(capture_parameters(), st.text(max_size=90))
def test_create_validation_only_ever_names_a_field(params, name):
    try:
        validation.validate_name(name)
        p = validation.validate(params, storage_accounts={"local": AZURE_CONTAINER})
        for field, expression, _ in validation.expressions_to_compile(p):
            assert field in ("bpfFilter", "filters")
            assert isinstance(expression, str)
    except InvalidArgument as e:
        assert e.field
        assert str(e).startswith(e.field + ": ")


@FUZZ
@given(st.lists(st.tuples(FIELD_TEXT, FIELD_TEXT, FIELD_TEXT, FIELD_TEXT, FIELD_TEXT), max_size=4))
def test_filter_parsing_only_ever_names_a_field(rows):
    items = [
        pb.PacketCaptureFilter(protocol=a, local_ip_address=b, remote_ip_address=c, local_port=d, remote_port=e) for a, b, c, d, e in rows
    ]
    try:
        parsed = filters.parse_filters(items)
        filters.capture_expression(parsed, filters.PLACEHOLDER_LOCALS)
    except filters.FilterError as e:
        assert e.field.startswith("filters")


@FUZZ
@given(JSON)
def test_an_arm_body_is_a_message_or_a_400(body):
    try:
        assert isinstance(arm.parameters(body), pb.PacketCaptureParameters)
    except arm.HttpError as e:
        assert (e.status, e.code) == (400, "InvalidRequestFormat")


class NoCoordinator:
    """Stands in for the SDK client behind the webhooks: no agents, no captures."""

    def list_agents(self) -> list:
        return []

    def list(self) -> list:
        return []

    def get_status(self, *, name: str):
        raise sdk.CaptureNotFound(sdk.grpc.StatusCode.NOT_FOUND, name)


RULES = alerts.AlertRules.parse(
    {"rules": [{"name": "any", "source": "any"}, {"name": "vmss", "scaleSetLabel": "vmss", "instanceLabel": "i"}]}
)


@FUZZ
@given(JSON, st.sampled_from(["azure", "alertmanager"]))
def test_a_webhook_payload_is_results_or_a_400(body, kind):
    handle = alerts.handle_azure_monitor if kind == "azure" else alerts.handle_alertmanager
    try:
        results = handle(NoCoordinator(), RULES, body)  # type: ignore[arg-type]
        assert all(r.action in ("ignored", "no-rule", "failed") for r in results)
    except arm.HttpError as e:
        assert (e.status, e.code) == (400, "InvalidRequestFormat")


@FUZZ
@given(JSON)
def test_a_rules_file_is_rules_or_names_the_rule(doc):
    try:
        alerts.AlertRules.parse(doc)
    except alerts.RuleError as e:
        assert str(e).startswith("rules")


@FUZZ
@given(st.one_of(st.text(max_size=200), JSON.map(json.dumps)))
def test_an_auth_file_loads_or_names_the_entry(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("auth") / "auth.toml"
    path.write_text(text)
    try:
        loaded = auth.AuthFile.load(str(path))
        assert all(isinstance(t, auth.TokenEntry) for t in loaded.tokens)
    except auth.AuthError as e:
        assert str(e).startswith(str(path))


def test_the_fuzzers_reach_both_outcomes():
    """The entry points above are not fuzzed only into their error path."""
    assert isinstance(
        validation.validate(
            pb.PacketCaptureParameters(target="t", storage_location=pb.PacketCaptureStorageLocation(file_path="/var/captures/a.cap")),
            storage_accounts={"local": AZURE_CONTAINER},
        ),
        pb.PacketCaptureParameters,
    )
    assert arm.parameters({"properties": {"target": "x"}}).target == "x"
    with pytest.raises(arm.HttpError):
        arm.parameters([])
