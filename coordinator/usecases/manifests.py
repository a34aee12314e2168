"""Signed manifests of finished captures, and the key that verifies them."""

from __future__ import annotations

import logging

from fleetcap.coordinator import manifest
from fleetcap.coordinator.errors import (
    Unimplemented,
)
from fleetcap.coordinator.manifest import ManifestSigner
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.usecases.common import (
    Captures,
)

log = logging.getLogger(__name__)


class Manifests:
    """Signs what a capture stored (coordinator/manifest.py has the format)."""

    def __init__(self, store: Store, signer: ManifestSigner | None):
        self.store = store
        self.signer = signer
        self.captures = Captures(store)

    async def manifest(self, name: str) -> bytes:
        """The signed manifest of a finished capture (coordinator/manifest.py)."""
        record = await self.captures.record(name)
        signer = self._signer()
        return signer.sign(manifest.body(record, await self.store.get_instances(name)))

    def manifest_key(self) -> tuple[str, str]:
        """(public key PEM, key id) of the key that signs this coordinator's manifests."""
        signer = self._signer()
        return signer.public_key_pem, signer.key_id

    def _signer(self) -> ManifestSigner:
        if self.signer is None:
            raise Unimplemented("this coordinator was started without a manifest signing key")
        return self.signer
