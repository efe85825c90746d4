"""core.hashing: the stable id hashes buckets and samples are drawn with."""

from __future__ import annotations

import numpy as np

from keyphrase_pipeline.core.hashing import pair_hash, splitmix64


def test_splitmix64_is_the_reference_finaliser():
    # splitmix64.c seeded with 0: its first output is the finaliser of 0 + the golden gamma
    assert splitmix64(0)[0] == np.uint64(0xE220A8397B1DCDAF)
    assert splitmix64([-1, 2 ** 63 - 1]).dtype == np.uint64  # negative and largest ids wrap, no overflow error


def test_pair_hash_is_stable_ordered_and_spreads_sequential_ids():
    items, kps = np.arange(10_000), np.arange(10_000) % 7
    h = pair_hash(items, kps)
    assert np.array_equal(h, pair_hash(items, kps)) and len(np.unique(h)) == 10_000
    assert pair_hash([1], [2])[0] != pair_hash([2], [1])[0]
    # the lowest 10% of hashes is about 10% of the pairs: a threshold on it samples them uniformly
    share = (h < np.uint64(2 ** 64 // 10)).mean()
    assert 0.09 < share < 0.11
