"""Named random streams derived from one seed (DESIGN.md section 3).

A run is a pure function of its scenario, including ``seed``. :class:`RandomStreams` turns
that seed into independent child generators, one per named purpose (``exogenous``,
``schedule``, ``network``, ``init``, and one per agent population). The child for a name is
derived from the name's bytes, not from the order in which names are requested, so adding a
population never changes the stream of another one, and Python's string hashing (which varies
with ``PYTHONHASHSEED``) is never involved.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "CORE_STREAMS",
    "RandomStreams",
    "replicate_seed_sequence",
    "run_seed_sequence",
    "sweep_seed_sequence",
]

#: The streams every model uses; populations add their own names.
CORE_STREAMS = ("exogenous", "schedule", "network", "init")


def _name_key(name: str) -> tuple[int, ...]:
    """A stable spawn key for a stream name: four 32-bit words of its SHA-256."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def replicate_seed_sequence(master_seed: int, replicate: int) -> np.random.SeedSequence:
    """The seed sequence of sweep replicate ``replicate``: ``SeedSequence(master, (i,))``.

    Any replicate can be replayed alone, on any worker, with identical output.
    """
    if replicate < 0:
        raise ValueError(f"replicate must be >= 0, got {replicate}")
    return np.random.SeedSequence(master_seed, spawn_key=(replicate,))


def sweep_seed_sequence(master_seed: int, point: int, replicate: int) -> np.random.SeedSequence:
    """The seed sequence of replicate ``replicate`` of sweep design point ``point``.

    ``SeedSequence(master_seed, spawn_key=(point, replicate))``: it depends only on these three
    numbers, never on how many points, replicates or workers the sweep has.
    """
    if point < 0 or replicate < 0:
        raise ValueError(f"point and replicate must be >= 0, got {point} and {replicate}")
    return np.random.SeedSequence(master_seed, spawn_key=(point, replicate))


def run_seed_sequence(
    seed: int, spawn_key: tuple[int, ...] | None = None
) -> np.random.SeedSequence:
    """The root seed sequence of a run: ``SeedSequence(seed, spawn_key=spawn_key)``.

    With no key this equals ``SeedSequence(seed)``, the root of a plain run, so that adding
    ``run.spawn_key`` to the scenario format changed no existing run.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.SeedSequence(int(seed), spawn_key=tuple(spawn_key or ()))


class RandomStreams:
    """Independent named ``numpy.random.Generator`` streams from one seed.

    Args:
        seed: The scenario's seed (a non-negative int) or a ``SeedSequence`` (a sweep
            replicate's).

    Examples:
        >>> streams = RandomStreams(7)
        >>> a = streams.get("exogenous").standard_normal()
        >>> b = RandomStreams(7).get("exogenous").standard_normal()
        >>> a == b
        True
    """

    def __init__(self, seed: int | np.random.SeedSequence) -> None:
        if isinstance(seed, np.random.SeedSequence):
            self.root = seed
        else:
            if int(seed) < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed}")
            self.root = np.random.SeedSequence(int(seed))
        self._streams: dict[str, np.random.Generator] = {}

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """The child seed sequence for ``name`` (the same for the same root and name)."""
        if not name:
            raise ValueError("stream name must be non-empty")
        return np.random.SeedSequence(
            self.root.entropy, spawn_key=(*self.root.spawn_key, *_name_key(name))
        )

    def get(self, name: str) -> np.random.Generator:
        """The generator for ``name``; created on first use and then shared."""
        if name not in self._streams:
            self._streams[name] = np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
        return self._streams[name]
