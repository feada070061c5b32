"""Which subdir of which channel in which store: the one argument every per-subdir step takes."""

from __future__ import annotations

from dataclasses import dataclass

from .contract import join_key
from .store import Store


@dataclass(frozen=True)
class SubdirRef:
    store: Store
    channel: str  # the channel prefix, '' for the bucket root
    name: str  # the subdir, e.g. 'linux-64'

    @property
    def prefix(self) -> str:
        """The subdir folder's key prefix."""
        return join_key(self.channel, self.name)

    def key(self, *parts: str) -> str:
        """The key of a file inside the subdir folder."""
        return join_key(self.prefix, *parts)

    def describe(self, *parts: str) -> str:
        """The folder (or a file in it) as a person reads it: s3://bucket/key or a local path."""
        return self.store.describe(self.key(*parts))
