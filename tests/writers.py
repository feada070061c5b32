"""Writers that take no lease (an older indexer, a hand-run tool): only the state's compare-and-swap
protects a concurrent update from them, which is what race tests need to exercise."""

from __future__ import annotations

from typing import cast

from reindexer.indexer import index_subdir_locked
from reindexer.lease import Lease
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.store import Store
from reindexer.subdir_ref import SubdirRef


class IgnoredLease:
    def check(self) -> None:
        """A writer that ignores leases never doubts it may commit."""


def index_ignoring_lease(
    store: Store, channel: str, subdir: str, options: IndexOptions | None = None
) -> SubdirReport:
    ref = SubdirRef(store, channel, subdir)
    return index_subdir_locked(ref, options or IndexOptions(), cast(Lease, IgnoredLease()))
