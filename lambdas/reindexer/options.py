"""How an indexing run behaves: what it indexes, how outputs are written, how fast and for how long."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from .clock import SYSTEM_CLOCK, Clock
from .contract import DEFAULT_MAX_PACKAGE_MB, DEFAULT_READ_JOBS
from .lease import LeaseTerms

DEFAULT_REPODATA_MAX_AGE = 60
# Bump when the bytes we publish for the same records change, so existing channels get rewritten.
OUTPUT_FORMAT = 1


class ProgressFactory(Protocol):
    """Opens a progress display for `total` package reads and yields the function that advances it."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Callable[[], None]]: ...


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    del label, total
    yield lambda: None


@dataclass(frozen=True)
class PublishSettings:
    """How outputs are written; a change of settings rewrites the outputs on the next full run."""

    base_url: str | None = None
    repodata_max_age: int = DEFAULT_REPODATA_MAX_AGE
    # A channel that needs credentials: shared caches (CDNs, proxies) must not keep its index.
    private: bool = False

    def subdir_base_url(self, subdir: str) -> str | None:
        """Clients fetch `base_url + filename`, so the channel-level URL gets the subdir appended."""
        return f"{self.base_url.rstrip('/')}/{subdir}/" if self.base_url else None

    @property
    def repodata_cache_control(self) -> str:
        return f"{'private' if self.private else 'public'}, max-age={self.repodata_max_age}"

    def fingerprint(self) -> str:
        return json.dumps(
            {
                "format": OUTPUT_FORMAT,
                "base_url": self.base_url,
                "max_age": self.repodata_max_age,
                "private": self.private,
            },
            sort_keys=True,
        )


@dataclass
class IndexOptions:
    subdirs: Sequence[str] | None = None
    force: bool = False
    dry_run: bool = False
    jobs: int = DEFAULT_READ_JOBS
    settings: PublishSettings = field(default_factory=PublishSettings)
    progress: ProgressFactory = no_progress
    lease: LeaseTerms = field(default_factory=LeaseTerms)
    # clock.monotonic() value after which no new package read starts; None for no limit.
    deadline: float | None = None
    # Package files larger than this are rejected before they are downloaded.
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_MB * 1024 * 1024
    # Lease expiries and backoffs, the read deadline, durations and the shard index's date.
    clock: Clock = SYSTEM_CLOCK
    # Full runs delete shards no index has named for this many seconds; None (the event path) never deletes.
    shard_retention: float | None = None
    # A noarch package whose newest version holds <subdir>/patch_instructions.json (rattler-index's
    # --repodata-patch); its instructions apply before the subdir file's.
    repodata_patch: str | None = None
