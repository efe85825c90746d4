"""Stable integer hashes for partitioning and sampling by id: the same id lands in the same bucket, or the same
sample, on every run, machine and release.

``splitmix64`` is the finaliser of Steele, Lea and Flood's SplittableRandom ("Fast splittable pseudorandom number
generators", OOPSLA 2014; Vigna's splitmix64.c): a bijection of 64-bit words whose output bits each depend on every
input bit, so sequential or strided ids spread evenly."""

from __future__ import annotations

import numpy as np

_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def splitmix64(ids) -> np.ndarray:
    """splitmix64's finaliser of each int64 id (as uint64, wrapping): uint64 ``(n,)`` for an array-like ``(n,)`` or
    one int (``(1,)``)."""
    z = np.atleast_1d(np.asarray(ids, dtype=np.int64)).view(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def pair_hash(item_ids, keyphrase_ids) -> np.ndarray:
    """A uint64 ``(n,)`` per (item, keyphrase) pair, from two int64 array-likes ``(n,)``: the keyphrase's splitmix64
    mixed into the item id, then splitmix64 again (so (a, b) and (b, a) differ)."""
    mixed = np.asarray(item_ids, dtype=np.int64).view(np.uint64) ^ splitmix64(keyphrase_ids)
    return splitmix64(mixed.view(np.int64))
