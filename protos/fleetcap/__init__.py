"""fleetcap: packet capture across a fleet.

    import fleetcap
    with fleetcap.Client("127.0.0.1:7770", token=...) as c:   # or FLEETCAP_TOKEN
        c.create(name="pc1", target="web", target_type="AzureVMSS", storage_account="local")
        final = c.wait(name="pc1")

`fleetcap.AsyncClient` is the asyncio twin. The generated protocol lives in `fleetcap.v1`.
"""
_SDK_NAMES = ("Client", "AsyncClient", "FleetcapError", "InvalidCapture", "CaptureNotFound",
              "CaptureAlreadyExists", "QuotaExceeded", "CoordinatorUnavailable", "Unauthenticated",
              "PermissionDenied", "UnsafeName", "IncompleteDownload")


def __getattr__(name: str):
    # Lazily, so that importing fleetcap.v1 (as the daemons do) does not load the SDK.
    if name in _SDK_NAMES:
        from fleetcap.clients import sdk
        return getattr(sdk, name)
    raise AttributeError(f"module 'fleetcap' has no attribute {name!r}")
