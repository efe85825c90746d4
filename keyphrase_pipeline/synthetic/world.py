"""The synthetic world's hidden truth: loading it, true relevance, exposure, and the simulated annotator.

Only evaluation, the report, the UI and the *simulated* LLM judge read this module's data (the tables
under ``synth/`` written by ``keyphrase_pipeline.synthetic.synth``); the pipeline never trains on it.

True relevance of (item, keyphrase): the keyphrase's product type equals the item's (type synonyms
such as "cover" ~ "case" map to one canonical type) AND every constraint the keyphrase carries
(brand, colour, size, material, compat, count) equals the item's value for that attribute. A
keyphrase without constraints ("phone case") is relevant to every item of its type. An item with no
value for a constrained attribute (an unbranded item and the query "spigen phone case") is not relevant.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, ds_range, read_parquet

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

#: Attribute slots that a keyphrase may constrain (same names in synth/items and synth/keyphrases).
SLOTS: tuple[str, ...] = ("brand", "colour", "size", "material", "compat", "count")

#: Exposure buckets: an item is "tail" when it had fewer than this many impressions in the window
#: OR fewer than the median impressions of the catalog's items; "head" otherwise.
TAIL_MIN_IMPRESSIONS = 5

# ---------------------------------------------------------------------------------------------
# counter-based hashing: deterministic per key, vectorised (splitmix64)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def hash64(seed: int, *keys) -> np.ndarray:
    """A 64-bit hash of (seed, key1, key2, ...) per element; keys broadcast (ints or int arrays)."""
    arrays = [np.asarray(k).astype(np.int64).view(np.uint64) if np.asarray(k).dtype != np.uint64
              else np.asarray(k) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    h = _mix(np.full(shape, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64))
    for a in arrays:
        with np.errstate(over="ignore"):
            h = _mix(h ^ (a * _M2 + np.uint64(0x632BE59BD9B4E019)))
    return h


def hash_u01(seed: int, *keys) -> np.ndarray:
    """Uniform in (0, 1), deterministic per key."""
    h = hash64(seed, *keys)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def hash_normal(seed: int, *keys) -> np.ndarray:
    """Standard normal, deterministic per key (Box-Muller on two hashed uniforms)."""
    u1 = hash_u01(seed, *keys, 1)
    u2 = hash_u01(seed, *keys, 2)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def stable_seed(*parts) -> int:
    """An int seed from any printable parts (stable across processes, unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha1("|".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------
@dataclass
class Truth:
    """Attribute codes of items and keyphrase constraints; -1 = no value / unconstrained."""

    item_ids: np.ndarray        # int64, sorted
    item_type: np.ndarray       # int32 code of product type
    item_codes: np.ndarray      # int32 (n_items, len(SLOTS))
    kp_ids: np.ndarray          # int64, sorted
    kp_type: np.ndarray         # int32
    kp_codes: np.ndarray        # int32 (n_kp, len(SLOTS)), -1 = unconstrained
    type_names: list[str]

    @classmethod
    def from_frames(cls, items: pd.DataFrame, keyphrases: pd.DataFrame) -> "Truth":
        """Encode ``synth/items`` (``item_id``, ``product_type``, the ``SLOTS`` columns) and ``synth/keyphrases``
        (``keyphrase_id``, ``product_type``, ``SLOTS``) frames; KeyError when a column is missing."""
        items = items.sort_values("item_id", kind="stable")
        keyphrases = keyphrases.sort_values("keyphrase_id", kind="stable")
        types = sorted(set(items["product_type"].dropna()) | set(keyphrases["product_type"].dropna()))
        tmap = {t: i for i, t in enumerate(types)}
        item_codes = np.full((len(items), len(SLOTS)), -1, dtype=np.int32)
        kp_codes = np.full((len(keyphrases), len(SLOTS)), -1, dtype=np.int32)
        for j, slot in enumerate(SLOTS):
            vals = sorted(set(items[slot].dropna().astype(str)) | set(keyphrases[slot].dropna().astype(str)))
            vmap = {v: i for i, v in enumerate(vals)}
            item_codes[:, j] = items[slot].map(vmap).fillna(-1).to_numpy(np.int32)
            kp_codes[:, j] = keyphrases[slot].map(vmap).fillna(-1).to_numpy(np.int32)
        return cls(
            item_ids=items["item_id"].to_numpy(np.int64),
            item_type=items["product_type"].map(tmap).fillna(-1).to_numpy(np.int32),
            item_codes=item_codes,
            kp_ids=keyphrases["keyphrase_id"].to_numpy(np.int64),
            kp_type=keyphrases["product_type"].map(tmap).fillna(-2).to_numpy(np.int32),
            kp_codes=kp_codes,
            type_names=types,
        )

    # -- index lookups ------------------------------------------------------------------------
    def item_index(self, item_ids, strict: bool = True) -> np.ndarray:
        """Row index (int64, same shape as ``item_ids``) of each item id; -1 for unknown ids unless ``strict``,
        which raises DataError (exit 3) on any unknown id."""
        return _lookup(self.item_ids, item_ids, "item_id", strict)

    def kp_index(self, keyphrase_ids, strict: bool = True) -> np.ndarray:
        """Row index (int64) of each keyphrase id; -1 for unknown ids unless ``strict`` (DataError, exit 3)."""
        return _lookup(self.kp_ids, keyphrase_ids, "keyphrase_id", strict)

    # -- relevance ----------------------------------------------------------------------------
    def match_by_index(self, ii: np.ndarray, kk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(relevant bool, share of the keyphrase's constraints the item meets) for aligned or
        broadcastable index arrays ``ii`` (items) and ``kk`` (keyphrases). A wrong type gives 0."""
        ii, kk = np.asarray(ii), np.asarray(kk)
        same_type = self.item_type[ii] == self.kp_type[kk]
        met = np.zeros(same_type.shape, dtype=np.int8)
        n = np.zeros(kk.shape, dtype=np.int8)
        for j in range(len(SLOTS)):             # slot by slot: no (..., n_slots) temporaries
            kc = self.kp_codes[kk, j]
            constrained = kc >= 0
            met += constrained & (kc == self.item_codes[ii, j])
            n += constrained
        n = np.broadcast_to(n, met.shape)
        frac = np.where(same_type, np.where(n > 0, met / np.maximum(n, 1), 1.0), 0.0)
        return same_type & (met == n), frac

    def relevant(self, item_ids, keyphrase_ids) -> np.ndarray:
        """True relevance (bool array, the broadcast shape of the two id arrays); unknown ids are not relevant."""
        ii = self.item_index(item_ids, strict=False)
        kk = self.kp_index(keyphrase_ids, strict=False)
        ok = (ii >= 0) & (kk >= 0)
        rel, _ = self.match_by_index(np.where(ok, ii, 0), np.where(ok, kk, 0))
        return rel & ok


def _lookup(sorted_ids: np.ndarray, ids, what: str, strict: bool) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        if strict and ids.size:
            raise DataError(f"unknown {what}s (world is empty)")
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, len(sorted_ids) - 1)
    found = sorted_ids[pos] == ids
    if strict and not found.all():
        bad = ids[~found][:5].tolist()
        raise DataError(f"unknown {what}s in the synthetic world, e.g. {bad}")
    return np.where(found, pos, -1)


# ---------------------------------------------------------------------------------------------
class World:
    """The hidden truth of a synthetic world (``synth/`` in the lake)."""

    def __init__(self, items: pd.DataFrame, keyphrases: pd.DataFrame, meta: dict, lake: Lake | None = None):
        self.items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
        self.keyphrases = keyphrases.sort_values("keyphrase_id", kind="stable").reset_index(drop=True)
        self.meta = meta
        self.lake = lake
        self.truth = Truth.from_frames(self.items, self.keyphrases)

    @classmethod
    def load(cls, settings_or_lake) -> "World":
        """Read ``synth/items``, ``synth/keyphrases`` and ``synth/world.json``.

        Raises DataError "not a synthetic world" when the lake has no ``synth/`` tables."""

        lake = settings_or_lake if isinstance(settings_or_lake, Lake) else Lake.from_settings(settings_or_lake)
        meta_path = layout.synth_world_meta_path(lake)
        if not lake.exists(meta_path):
            raise DataError(f"not a synthetic world: {meta_path} is missing (run `kp synth` first)")
        meta = lake.read_json(meta_path)
        items = read_parquet(lake.path("synth", "items"))
        kps = read_parquet(lake.path("synth", "keyphrases"))
        log.info("loaded synthetic world: %d items, %d keyphrases", len(items), len(kps))
        return cls(items, kps, meta, lake)

    # -- truth ----------------------------------------------------------------------------------
    def is_relevant(self, item_ids, keyphrase_ids) -> np.ndarray:
        """True relevance of aligned (item_id, keyphrase_id) arrays; unknown ids are not relevant."""
        return self.truth.relevant(item_ids, keyphrase_ids)

    def relevant_keyphrases(self, item_ids) -> dict[int, np.ndarray]:
        """All truly relevant keyphrase ids of each item (computed per product-type block)."""
        t = self.truth
        ids = np.unique(np.asarray(item_ids, dtype=np.int64))
        ii = t.item_index(ids, strict=False)
        out: dict[int, np.ndarray] = {int(i): np.empty(0, dtype=np.int64) for i in ids[ii < 0]}
        ids, ii = ids[ii >= 0], ii[ii >= 0]
        for ty in np.unique(t.item_type[ii]):
            sel = t.item_type[ii] == ty
            kk = np.flatnonzero(t.kp_type == ty)
            b_ids, b_ii = ids[sel], ii[sel]
            for start in range(0, len(b_ii), 2048):
                chunk = b_ii[start:start + 2048]
                rel, _ = t.match_by_index(chunk[:, None], kk[None, :])
                for row, item_id in enumerate(b_ids[start:start + 2048]):
                    out[int(item_id)] = t.kp_ids[kk[rel[row]]]
        return out

    def n_relevant(self) -> pd.Series:
        """Number of truly relevant keyphrases per item (index item_id)."""
        rel = self.relevant_keyphrases(self.truth.item_ids)
        return pd.Series({k: len(v) for k, v in rel.items()}, name="n_relevant").sort_index()

    # -- exposure -------------------------------------------------------------------------------
    def exposure(self, settings: Settings, end_ds, days: int) -> pd.DataFrame:
        """Impressions per item over the ``days`` ending at ``end_ds``, from raw events.

        Every item of the world appears (0 impressions when never shown). ``bucket`` is ``tail``
        when impressions < max(TAIL_MIN_IMPRESSIONS, median impressions), else ``head``."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        lake = Lake.from_settings(settings) if settings is not None else self.lake
        totals = pd.Series(0, index=pd.Index(self.truth.item_ids, name="item_id"), dtype=np.int64)
        for ds in ds_range(end_ds, days):
            path = lake.path("events", ds=ds)
            if not lake.exists(path):
                log.warning("exposure: no events for %s", ds)
                continue
            table = pads.dataset(path, format="parquet", ignore_prefixes=[".", "_"]).to_table(
                columns=["item_id", "event"], filter=pc.field("event") == "impression")
            vc = pd.Series(table.column("item_id").to_numpy()).value_counts()
            totals = totals.add(vc, fill_value=0).astype(np.int64)
        df = totals.rename("impressions").rename_axis("item_id").reset_index()
        cut = max(TAIL_MIN_IMPRESSIONS, float(df["impressions"].median()) if len(df) else 0.0)
        df["bucket"] = np.where(df["impressions"] < cut, "tail", "head")
        return df



def load_truth(settings: Settings) -> World | None:
    """The truth provider of a synthetic lake (``settings.truth_provider = "keyphrase_pipeline.synthetic.world:load_truth"``,
    see ``keyphrase_pipeline.core.truth``): the World when the lake holds ``synth/world.json``, else None."""
    lake = Lake.from_settings(settings)
    if not lake.exists(layout.synth_world_meta_path(lake)):
        return None
    return World.load(settings)


# ---------------------------------------------------------------------------------------------
#: The LLM-like annotator's P(yes) on a truly irrelevant pair of the item's own product type, per constraint the
#: item fails (several failing constraints multiply: each is a chance to notice), at ``accuracy`` 0.9. LLM judges
#: are lenient on exactly the attributes relevance turns on: a size, a model number, a pack count, a brand.
LLM_LENIENCY = {"brand": 0.45, "colour": 0.2, "size": 0.5, "material": 0.3, "compat": 0.5, "count": 0.55}
#: ... on an item of another product type made for what the keyphrase names (the keyphrase "iphone 14 case",
#: the item an iPhone 14 screen protector: accessory-for-product confusion), and on any other type.
LLM_ACCESSORY = 0.45
LLM_OTHER_TYPE = 0.005
#: ... P(no) on a truly relevant pair (over-strict on a paraphrase or a missing attribute).
LLM_MISS = 0.08
#: Spread (log scale) of the per-product-type leniency: some types are judged far more loosely than others.
LLM_TYPE_SPREAD = 0.5
#: Spread (logit scale) of the LLM's P(yes) around what it "believes": confidence tracks how clear a pair is.
LLM_CONFIDENCE_SPREAD = 1.8


def simulated_p_yes(world: World, item_ids, keyphrase_ids, accuracy: float = 0.9, seed: int = 0,
                    errors: str = "iid") -> np.ndarray:
    """SIMULATED LLM annotator (no model): P(yes) for aligned (item_id, keyphrase_id) arrays, float64 in (0, 1).

    ``errors="iid"``: it agrees with the world's true relevance with probability ``accuracy``, decided per pair by
    a hash of (seed, item_id, keyphrase_id), so the same pair always gets the same answer. The score is
    probability-like: 0.75-0.99 when it says yes, 0.01-0.25 when it says no (a confidence unrelated to being
    right: the kindest error model there is for distillation).

    ``errors="llm"``: errors the way LLM judges make them (``llm_like_p_yes``): lenient on brand, size, model
    and count mismatches, accessory-for-product confusion, errors correlated within a product type, and a
    confidence that tracks correctness. ``accuracy`` scales its error rates (0.9: the rates above).

    Unknown ids count as not relevant. Raises ValueError for another ``errors``."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    keyphrase_ids = np.asarray(keyphrase_ids, dtype=np.int64)
    if errors == "llm":
        t = world.truth
        ii, kk = t.item_index(item_ids, strict=False), t.kp_index(keyphrase_ids, strict=False)
        return llm_like_p_yes(t, ii, kk, accuracy, seed, item_ids, keyphrase_ids)
    if errors != "iid":
        raise ValueError(f"simulated judge errors must be 'iid' or 'llm', got {errors!r}")
    truth = world.is_relevant(item_ids, keyphrase_ids)
    agree = hash_u01(seed, item_ids, keyphrase_ids, 101) < accuracy
    says_yes = np.where(agree, truth, ~truth)
    conf = hash_u01(seed, item_ids, keyphrase_ids, 202)
    return np.where(says_yes, 0.75 + 0.24 * conf, 0.25 - 0.24 * conf)


def llm_like_p_yes(truth: Truth, ii: np.ndarray, kk: np.ndarray, accuracy: float, seed: int,
                   item_ids: np.ndarray, keyphrase_ids: np.ndarray) -> np.ndarray:
    """The LLM-like simulated annotator's P(yes) for aligned row indexes ``ii``/``kk`` into ``truth`` (-1: unknown,
    not relevant) with the pairs' ids (for the per-pair hashes). float64 (n,) in (0, 1).

    What it believes: q = P(it would say yes). On a relevant pair q = 1 - ``LLM_MISS``; on an irrelevant pair
    of the item's type the product of ``LLM_LENIENCY`` over the constraints the item fails; of another type
    ``LLM_ACCESSORY`` when the item is made for the model the keyphrase names, else ``LLM_OTHER_TYPE``. The
    error rates are scaled by (1 - accuracy) / 0.1 and by a per-product-type factor exp(``LLM_TYPE_SPREAD`` *
    N(0, 1)) (one draw per type and seed: correlated errors), capped at 0.95. Its P(yes) = sigmoid(logit(q) +
    ``LLM_CONFIDENCE_SPREAD`` * N(0, 1)) (one draw per pair): near 0 or 1 where q is, i.e. where the pair is
    clear, and near 0.5 on the pairs it gets wrong most often. **Simulated**: modelled on error modes reported
    for LLM relevance judges, not fitted to any LLM's answers."""
    ok = (ii >= 0) & (kk >= 0)
    i0, k0 = np.where(ok, ii, 0), np.where(ok, kk, 0)
    rel, _ = truth.match_by_index(i0, k0)
    rel &= ok
    item_type = truth.item_type[i0]
    same_type = item_type == truth.kp_type[k0]
    lenient = np.ones(len(i0))
    for j, slot in enumerate(SLOTS):
        kc = truth.kp_codes[k0, j]
        fails = same_type & (kc >= 0) & (kc != truth.item_codes[i0, j])
        lenient = np.where(fails, lenient * LLM_LENIENCY[slot], lenient)
    j_compat = SLOTS.index("compat")
    kc = truth.kp_codes[k0, j_compat]
    made_for = ~same_type & (kc >= 0) & (kc == truth.item_codes[i0, j_compat])
    q_err = np.where(same_type, lenient, np.where(made_for, LLM_ACCESSORY, LLM_OTHER_TYPE))
    scale = (1.0 - accuracy) / 0.1 * np.exp(LLM_TYPE_SPREAD * hash_normal(seed, item_type.astype(np.int64), 303))
    q_yes = np.where(rel, 1.0 - np.minimum(0.95, LLM_MISS * scale), np.minimum(0.95, q_err * scale))
    q_yes = np.where(ok, q_yes, np.minimum(0.95, LLM_OTHER_TYPE * scale))
    q_yes = np.clip(q_yes, 1e-4, 1 - 1e-4)
    z = np.log(q_yes / (1 - q_yes)) + LLM_CONFIDENCE_SPREAD * hash_normal(seed, item_ids, keyphrase_ids, 404)
    return 1.0 / (1.0 + np.exp(-z))
