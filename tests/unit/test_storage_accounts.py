"""`--storage-account [KIND:]NAME[=REFERENCE]`: what the coordinator's flag makes of each form."""

import pytest

from fleetcap import main
from fleetcap.clients.cli import UsageError
from fleetcap.coordinator.settings import StorageAccount
from fleetcap.core.vocabulary import StorageKind


def test_each_form_gives_the_kind_the_name_and_the_reference(monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    monkeypatch.setenv("ARCHIVE", "UseDevelopmentStorage=true")
    (tmp_path / "conn").write_text("UseDevelopmentStorage=true\n")
    accounts = main.storage_accounts(["plain", "archive=env:ARCHIVE", f"blob:evidence=file:{tmp_path}/conn"])
    assert accounts == (
        StorageAccount(StorageKind.AZURE_BLOB, "plain", "env:AZURE_STORAGE_CONNECTION_STRING"),
        StorageAccount(StorageKind.AZURE_BLOB, "archive", "env:ARCHIVE"),
        StorageAccount(StorageKind.AZURE_BLOB, "evidence", f"file:{tmp_path}/conn"),
    )
    assert "UseDevelopmentStorage" not in repr(accounts)  # only references, and not even those shown


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tape:old=env:X", "--storage-account tape:old: 'tape' is not a storage kind; the kinds are blob, s3"),
        ("local=env:X", "--storage-account 'local': the name must be non-empty, unique, not 'local', without '/'"),
        ("blob:=env:X", "--storage-account '': the name must be non-empty, unique, not 'local', without '/'"),
        ("a/b=env:X", "--storage-account 'a/b': the name must be non-empty, unique, not 'local', without '/'"),
        ("acct=AccountKey=c2VjcmV0", "--storage-account acct: give the secret as env:VARIABLE or file:PATH, never on the command line"),
        ("acct=env:FLEETCAP_TEST_UNSET", "--storage-account acct: environment variable FLEETCAP_TEST_UNSET is not set"),
    ],
)
def test_a_bad_account_is_refused_naming_the_flag_and_the_rule(spec, message, monkeypatch):
    monkeypatch.delenv("FLEETCAP_TEST_UNSET", raising=False)
    with pytest.raises(UsageError) as e:
        main.storage_accounts([spec])
    assert str(e.value) == message
    assert "c2VjcmV0" not in str(e.value)


def test_an_account_named_without_a_kind_is_known_by_its_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("S3", "S3Endpoint=https://s3.example:443;Bucket=captures;Region=eu-west-1")
    (tmp_path / "blob").write_text("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0\n")
    assert main.storage_accounts(["lake=env:S3", f"archive=file:{tmp_path}/blob"]) == (
        StorageAccount(StorageKind.S3, "lake", "env:S3"),
        StorageAccount(StorageKind.AZURE_BLOB, "archive", f"file:{tmp_path}/blob"),
    )


def test_an_account_name_is_given_once(monkeypatch):
    monkeypatch.setenv("X", "UseDevelopmentStorage=true")
    with pytest.raises(UsageError, match="must be non-empty, unique"):
        main.storage_accounts(["a=env:X", "blob:a=env:X"])
