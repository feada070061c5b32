"""conda.models.version.VersionOrder, as far as conda-index 0.13.0 uses it (ChannelIndex._update_channeldata
compares two versions with `>`): conda's version order as rattler's Version (py-rattler) implements it, the
order pixi and rattler solve with. Our channeldata.py uses the same class, so the differential test does not
check the version order itself, only what is built on it."""

from __future__ import annotations

import functools
from typing import Any

from rattler import Version


@functools.total_ordering
class VersionOrder:
    """A version string ordered as conda orders it."""

    norm: str

    def __init__(self, version: Any) -> None:
        if isinstance(version, VersionOrder):
            version = version.norm
        self.norm = str(version).strip().lower()
        self._version = Version(self.norm)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionOrder):
            return NotImplemented
        return bool(self._version == other._version)

    def __lt__(self, other: VersionOrder) -> bool:
        return bool(self._version < other._version)

    def __hash__(self) -> int:
        return hash(self._version)  # rattler's hash agrees with its equality (1.0 == 1.0.0)

    def __str__(self) -> str:
        return self.norm

    def __repr__(self) -> str:
        return f"VersionOrder({self.norm!r})"
