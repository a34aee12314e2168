"""fleetcap: packet capture across a fleet.

    import fleetcap
    with fleetcap.Client("127.0.0.1:7770", token=...) as c:   # or FLEETCAP_TOKEN
        c.create(name="pc1", target="web", target_type="AzureVMSS", storage_account="local")
        final = c.wait(name="pc1")

`fleetcap.AsyncClient` is the asyncio twin. The generated protocol lives in `fleetcap.v1`.
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # Lazily (fleetcap/public.py says why), and from the module the import contract places on top.
    public = importlib.import_module("fleetcap.public")
    if name in public.__all__:
        return getattr(public, name)
    raise AttributeError(f"module 'fleetcap' has no attribute {name!r}")
