"""The fleet budget's exchanges with agents (coordinator/budget.py holds the arithmetic)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from fleetcap.coordinator import budget
from fleetcap.coordinator.errors import (
    NotFound,
)
from fleetcap.coordinator.fetch import Dispatcher
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.usecases.common import (
    session_id,
)
from fleetcap.core import limits
from fleetcap.core.vocabulary import StopReason
from fleetcap.v1 import fleet_pb2, state_pb2

log = logging.getLogger(__name__)


class FleetBudget:
    """Grants and give-backs of a capture's fleetBytesLimit; a spent budget stops the capture."""

    def __init__(self, store: Store, dispatcher: Dispatcher, stop: Callable[[str, str], Awaitable[None]]):
        self.store = store
        self.dispatcher = dispatcher
        self._stop = stop
        self.budgets = budget.Budgets(store, self._send_grant, self._budget_spent)

    async def request(self, instance_key: str, request: fleet_pb2.BudgetRequest) -> None:
        """An agent asks for more of its capture's fleet budget (coordinator/budget.py). The
        coordinator trusts no agent: only for a capture of its own instance, with a budget,
        not stopped."""
        record = await self._budgeted(instance_key, request.capture_name, request.capture_id)
        if record is not None:
            await self.budgets.request(
                record.resource.name, request.capture_id, instance_key, len(record.instance_keys), max(0, request.need)
            )

    async def give_back(self, instance_key: str, ret: fleet_pb2.BudgetReturn) -> None:
        record = await self._budgeted(instance_key, ret.capture_name, ret.capture_id)
        if record is not None:
            await self.budgets.give_back(record.resource.name, instance_key, ret.returned)

    async def _budgeted(self, instance_key: str, name: str, capture_id: str) -> state_pb2.CaptureRecord | None:
        record = await self.store.get_capture(name) if limits.CAPTURE_NAME_RE.match(name) else None
        if (
            record is None
            or session_id(record) != capture_id
            or instance_key not in record.instance_keys
            or not record.resource.properties.fleet_bytes_limit
        ):
            log.warning("budget message from %s for capture %s refused: not a budgeted capture of that instance", instance_key, name[:100])
            return None
        return record

    def _send_grant(self, name: str, capture_id: str, instance_key: str, granted: int, exhausted: bool) -> None:
        self.dispatcher.send(
            instance_key,
            fleet_pb2.CoordinatorMessage(
                budget_grant=fleet_pb2.BudgetGrant(capture_name=name, capture_id=capture_id, granted=granted, exhausted=exhausted)
            ),
        )

    async def _budget_spent(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._stop(name, StopReason.FLEET_BYTES_EXCEEDED)
