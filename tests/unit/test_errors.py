"""The SDK's own error codes: what a caller matches on, and the tables the CLI and gateway key on them."""

import grpc
import pytest

import fleetcap
from fleetcap.clients import cli, errors, sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.clients.rest import arm


def test_every_grpc_failure_has_a_code_of_the_same_name_and_number():
    failures = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]
    assert [(ErrorCode.of(c).name, int(ErrorCode.of(c))) for c in failures] == [(c.name, c.value[0]) for c in failures]
    assert ErrorCode.of(grpc.StatusCode.OK) is ErrorCode.UNKNOWN
    assert ErrorCode.of(None) is ErrorCode.UNKNOWN


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidCapture),
        (grpc.StatusCode.NOT_FOUND, errors.CaptureNotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.CaptureAlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.QuotaExceeded),
        (grpc.StatusCode.UNAVAILABLE, errors.CoordinatorUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FleetcapError),
        (grpc.StatusCode.DATA_LOSS, errors.FleetcapError),
    ],
)
def test_a_failed_call_becomes_the_sdk_error_with_fleetcaps_code(code, kind):
    e = errors.from_rpc_error(_Failed(code, "the reason"))
    assert (type(e), e.code, e.message, str(e)) == (kind, ErrorCode[code.name], "the reason", f"{code.name}: the reason")
    assert not isinstance(e.code, grpc.StatusCode)


def test_the_cli_exit_codes_and_the_gateways_errors_are_keyed_on_the_sdk_code():
    assert all(isinstance(k, ErrorCode) for k in cli.EXIT_BY_CODE)
    assert all(isinstance(k, ErrorCode) for k in arm.HTTP_BY_CODE)
    assert cli.EXIT_BY_CODE[ErrorCode.NOT_FOUND] == cli.EXIT_NOT_FOUND == 3
    e = arm.from_sdk_error(errors.from_rpc_error(_Failed(grpc.StatusCode.ALREADY_EXISTS, "taken")))
    assert (e.status, e.code, e.message) == (409, "PacketCaptureExistingAlready", "taken")


def test_the_root_package_offers_the_sdk_names():
    assert (fleetcap.ErrorCode, fleetcap.Client, fleetcap.FleetcapError) == (ErrorCode, sdk.Client, errors.FleetcapError)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = fleetcap.Nope
