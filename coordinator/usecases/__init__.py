"""The coordinator's use cases, each a small service given its collaborators at wiring time.

| use case | module | called by |
|---|---|---|
| create (and dry run), stop, delete | lifecycle.py | the public API; the dispatch watch (starts, stops) |
| get, list, status and its watch, agents, storage accounts | queries.py | the public API |
| read a file (stored, or fetched from its instance) | files.py | the public API; uploads (the fetch area) |
| the flight recorder's trigger | recorder.py | the public API; the dispatch watch |
| signed manifests | manifests.py | the public API |
| agents' progress, in batches | progress.py | agents' control streams |
| agents connecting, lost, joining a scale set's capture | reconcile.py | control streams, expiry, the leader |
| the fleet budget's grants and give-backs | fleet_budget.py | control streams |

`build` wires them; coordinator/app.py hands each servicer and loop the ones it needs. A use
case never reaches through another: where one needs another's act (a spent budget stops its
capture), it is given that one function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from fleetcap.coordinator.fetch import Dispatcher
from fleetcap.coordinator.filter_compiler import FilterCompiler
from fleetcap.coordinator.manifest import ManifestSigner
from fleetcap.coordinator.settings import ServiceConfig
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.files import FileAccess
from fleetcap.coordinator.usecases.fleet_budget import FleetBudget
from fleetcap.coordinator.usecases.lifecycle import Lifecycle
from fleetcap.coordinator.usecases.manifests import Manifests
from fleetcap.coordinator.usecases.progress import ProgressIntake
from fleetcap.coordinator.usecases.queries import Queries
from fleetcap.coordinator.usecases.reconcile import Reconciler
from fleetcap.coordinator.usecases.recorder import FlightRecorder


@dataclasses.dataclass(frozen=True)
class UseCases:
    """Every use case of one coordinator, as `build` wired them (for app.py and tests)."""

    lifecycle: Lifecycle
    queries: Queries
    files: FileAccess
    recorder: FlightRecorder
    manifests: Manifests
    progress: ProgressIntake
    reconciler: Reconciler
    budget: FleetBudget


def build(
    store: Store,
    dispatcher: Dispatcher,
    sinks: Mapping[str, Sink],
    config: ServiceConfig | None = None,
    filters: FilterCompiler | None = None,
    signer: ManifestSigner | None = None,
) -> UseCases:
    lifecycle = Lifecycle(store, dispatcher, sinks, config or ServiceConfig(), filters or FilterCompiler())
    progress = ProgressIntake(store, sinks)
    return UseCases(
        lifecycle=lifecycle,
        queries=Queries(store, sinks),
        files=FileAccess(store, sinks, dispatcher),
        recorder=FlightRecorder(store, dispatcher),
        manifests=Manifests(store, signer),
        progress=progress,
        reconciler=Reconciler(store, dispatcher, sinks, progress.apply_progress),
        budget=FleetBudget(store, dispatcher, lifecycle.stop),
    )


__all__ = [
    "FileAccess",
    "FleetBudget",
    "FlightRecorder",
    "Lifecycle",
    "Manifests",
    "ProgressIntake",
    "Queries",
    "Reconciler",
    "UseCases",
    "build",
]
