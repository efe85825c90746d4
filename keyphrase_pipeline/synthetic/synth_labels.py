"""Human-style judged pairs from a synthetic world, for developing the training recipe (demo/dev only).

Real teams bring their own judgements (``kp train-cross --labels FILE``): search queries judged against
product titles, roughly half relevant, with annotator noise, often without a category. This module makes
files of that shape from the synthetic marketplace so that recipe choices can be checked on more than one
world (``kp eval-labels``):

* keyphrases are drawn from the world's keyphrase universe (at most ``n_pairs`` pairs: fewer when the
  world's keyphrases run out); for each, up to ``per_keyphrase`` items are
  "retrieved" the way a search engine's candidates look: truly relevant items, items of the same product
  type that miss one of the query's constraints (hard negatives), and items of other types (easy ones);
* the label is the world's hidden truth with ``noise`` of the labels flipped (human judges disagree with
  each other on 10-15% of pairs);
* ``with_category=False`` leaves the category empty (many real catalogs have none);
* ``long_titles=True`` (the ``listing`` world) lengthens titles to a marketplace's length (``seller_titles``).

**Simulated**: every title, keyphrase and label here comes from ``keyphrase_pipeline.synthetic.synth``'s generator, not from
people. Output columns: ``title, category, keyphrase, label`` (int 0/1) plus ``truth`` (the unflipped label)
and ``kind`` (the keyphrase kind: generic, brand_type, type_attr, compat, long_tail, misspelled).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from keyphrase_pipeline.synthetic.synth import (
    _gen_items,
    _gen_keyphrases,
    _titles,
    resolve_scale,
    taxonomy_for,
    title_text,
)
from keyphrase_pipeline.synthetic.world import SLOTS, Truth

log = logging.getLogger(__name__)

# Four worlds for recipe development: the demo world; one with another seed, a larger taxonomy (long
# tails of made-up brands: another vocabulary mix), no category and more noise; and "attr", whose judged
# candidates are what a search engine's result page holds for attribute queries (near misses on one
# attribute, other product types for the same model or brand), where relevance turns on one token.
WORLDS: dict[str, dict] = {
    "demo": {"seed": 7, "items": 3_000, "with_category": True, "noise": 0.12},
    "alt": {"seed": 20261129, "items": 30_000, "with_category": False, "noise": 0.15},
    "attr": {"seed": 20261205, "items": 30_000, "with_category": False, "noise": 0.12, "candidates": "attributes",
             "positive_share": 0.6},
    # attr's judged candidates with titles as long as a marketplace's (``seller_titles``): the deciding
    # attribute can sit behind a run of selling phrases.
    "listing": {"seed": 20261205, "items": 30_000, "with_category": False, "noise": 0.12,
                "candidates": "attributes", "positive_share": 0.6, "long_titles": True},
    # attribute queries whose deciding values come from open spaces (hundreds of devices, numeric sizes, model
    # codes made up per item): most of what decides a held-out query was never in the training half, as in real
    # judged search logs (``open_vocab``; issue 25).
    "open": {"seed": 20261206, "noise": 0.12, "with_category": False, "candidates": "open", "positive_share": 0.5},
}

# Selling phrases real listings carry between and after the words that decide relevance. None names a
# product type, brand, colour, size, material, model or count of the synthetic world.
_SELLING = (
    "Premium Quality", "Heavy Duty", "Lightweight and Durable", "Easy to Use", "Perfect Gift for Men Women",
    "for Home Office Travel", "Upgraded Version", "Brand New in Box", "with 1 Year Warranty", "Ergonomic Design",
    "Multipurpose", "Eco Friendly", "Non-Slip Grip", "Shockproof", "Anti-Scratch", "Portable Compact",
    "High Performance", "Professional Grade", "Value Bundle", "Gift Box Included", "Fast Shipping from USA",
    "Best Seller", "Limited Edition", "Everyday Use", "Indoor Outdoor", "Long Lasting", "Easy Install",
    "No Tools Required", "Sleek Modern Look", "Great for Daily Use", "Satisfaction Guaranteed", "Top Rated",
    "Lifetime Support", "Soft Touch Finish", "Reinforced Edges", "Travel Friendly", "Quick Release",
    "Precision Engineered", "Classic Style", "All Season", "Washable", "Foldable", "Stackable", "Adjustable",
    "Comfortable Fit", "Scratch Resistant", "Drop Tested", "Ultra Thin", "Reusable", "Easy Clean",
)
_BINDS = {"for", "with", "fits", "size", "compatible"}  # no selling phrase between these and their object


def _world(seed: int, n_items: int):
    """(items, keyphrases, truth, title segments) of the synthetic world of this seed and size; a title is
    ``_joined(segments)``."""
    _, n_items, n_kp, _ = resolve_scale(n_items)
    taxonomy = taxonomy_for(n_items)
    items = _gen_items(n_items, seed, taxonomy)
    kps = _gen_keyphrases(items, n_kp, seed, taxonomy)
    return items, kps, Truth.from_frames(items, kps), _titles(items, seed, segments=True)


def _joined(segments: np.ndarray) -> np.ndarray:
    """The titles (object array of str) of an object array of segment tuples (``synth._titles``)."""
    return np.array([title_text(s) for s in segments], dtype=object)


def _check(noise: float, n_pairs: int) -> None:
    if not 0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), got {noise}")
    if n_pairs < 2:
        raise ValueError(f"n_pairs must be >= 2, got {n_pairs}")


def seller_titles(titles: np.ndarray, seed: int, median_chars: int = 130, max_chars: int = 250) -> np.ndarray:
    """Titles lengthened to a marketplace's length: selling phrases (``_SELLING``) inserted at a random point
    between two of a title's segments and appended, so that a constraint can sit behind them (the way real
    listings put "..., Black, Size 10" last).

    Each title draws a target length from a log-normal with median ``median_chars`` (spread 0.35: about one in
    eight above 200 characters), capped at ``max_chars`` (a marketplace's limit); the title's own words are
    never cut. The same (``titles``, ``seed``) give the same output; one generator runs through the rows, so a
    title's filler also depends on the rows before it (an item reads differently at 600 and at 6,000 pairs).

    Args:
        titles: object array of segment tuples (``synth._titles(..., segments=True)``: a value such as
            "2 Pack" or "for Galaxy S21" is one segment, and no phrase lands inside it), or of str, read as
            one segment per word.

    Returns an object array of str, the same shape. The listing runs committed before 2026-12-05 used a
    version that cut plain titles at any word, which put a phrase inside about one multi-word attribute
    value in eight ("2 ... Pack": 1,519 of 12,257 at 6,000 listing pairs).
    **Simulated**: a stand-in for real sellers' wording, not a sample of it."""
    rng = np.random.default_rng([seed, 79])
    out = np.empty(len(titles), dtype=object)
    for i, title in enumerate(titles):
        target = min(max_chars, int(median_chars * np.exp(0.35 * rng.standard_normal())))
        segs = str(title).split() if isinstance(title, str) else list(title)
        text = title_text(segs)   # the world's title: its segments cut to 80 characters
        ends = np.cumsum([len(s) + 1 for s in segs]) - 1   # where each segment ends in ``text``
        cuts = [int(e) for e, s in zip(ends, segs) if e <= len(text) and s.split()[-1].lower() not in _BINDS]
        at = cuts[int(rng.integers(len(cuts)))] if cuts else len(text)
        head, tail = text[:at].strip(), text[at:].strip()
        extra, size = [], len(text)
        while size < target:
            phrase = _SELLING[int(rng.integers(len(_SELLING)))]
            if size + 1 + len(phrase) > max_chars:
                break
            extra.append(phrase)
            size += 1 + len(phrase)
        split = int(rng.integers(0, len(extra) + 1))
        out[i] = " ".join(p for p in (head, *extra[:split], tail, *extra[split:]) if p)
    return out


def _judged_frame(world, ii: np.ndarray, kk: np.ndarray, rng: np.random.Generator, noise: float,
                  with_category: bool, long_titles: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """The judged pairs (item rows ``ii``, keyphrase rows ``kk``) with their truth and ``noise`` of the labels
    flipped (drawn from ``rng``); ``long_titles``: titles lengthened by ``seller_titles``. Returns (frame,
    flipped mask)."""
    items, kps, truth, segments = world
    label_true, _ = truth.match_by_index(ii, kk)
    flip = rng.random(len(ii)) < noise
    shown = _joined(segments[ii])
    if long_titles:
        seed = int(rng.integers(2**31))
        uniq, inverse = np.unique(ii, return_inverse=True)  # one long title per item, however often it is judged
        shown = seller_titles(segments[uniq], seed)[inverse]
    return pd.DataFrame({
        "title": shown.astype(str),
        "category": items["category"].to_numpy(object)[ii].astype(str) if with_category else "",
        "keyphrase": kps["text"].to_numpy(object)[kk].astype(str),
        "label": (label_true ^ flip).astype("int8"),
        "truth": label_true.astype("int8"),
        "kind": kps["kind"].to_numpy(object)[kk].astype(str),
    }), flip


def make_judged_pairs(seed: int, n_items: int, n_pairs: int = 10_000, noise: float = 0.12,
                      with_category: bool = True, per_keyphrase: int = 6, positive_share: float = 0.5,
                      hard_share: float = 0.7) -> pd.DataFrame:
    """Up to ``n_pairs`` judged (title, category, keyphrase) pairs from a synthetic world of ``n_items`` items
    (fewer when every keyphrase has been used; ~40% relevant at the defaults).

    Args:
        seed: world seed (``kp synth --seed``); the same arguments give the same frame.
        n_items: catalogue size (vocabulary grows with it: ``keyphrase_pipeline.synthetic.synth.taxonomy_for``).
        noise: share of labels flipped, in [0, 0.5).
        per_keyphrase: candidates judged per keyphrase (as a search result page's top items).
        positive_share: target share of relevant pairs before noise.
        hard_share: share of the negatives that are the query's product type missing a constraint.

    Returns:
        DataFrame with ``title, category, keyphrase`` (str), ``label`` and ``truth`` (int8 0/1), ``kind``.

    Raises:
        ValueError: on a noise outside [0, 0.5) or fewer than 2 pairs.
    """
    _check(noise, n_pairs)
    world = _world(seed, n_items)
    items, kps, truth, _ = world
    rng = np.random.default_rng([seed, 77])
    type_of_item = truth.item_type
    by_type = {t: np.flatnonzero(type_of_item == t) for t in np.unique(type_of_item)}
    all_items = np.arange(len(items))

    rows_i: list[int] = []
    rows_k: list[int] = []
    for k in rng.permutation(len(kps)):
        if len(rows_i) >= n_pairs:
            break
        same = by_type.get(truth.kp_type[k], np.empty(0, dtype=np.int64))
        if not len(same):
            continue
        rel, _ = truth.match_by_index(same, np.full(len(same), k))
        pos, hard = same[rel], same[~rel]
        n_pos = min(len(pos), int(rng.binomial(per_keyphrase, positive_share)))
        n_neg = per_keyphrase - n_pos
        n_hard = min(len(hard), int(rng.binomial(n_neg, hard_share)))
        picks = [rng.choice(pos, n_pos, replace=False) if n_pos else np.empty(0, np.int64),
                 rng.choice(hard, n_hard, replace=False) if n_hard else np.empty(0, np.int64),
                 rng.choice(all_items, n_neg - n_hard, replace=False)]
        for i in np.unique(np.concatenate(picks)):
            rows_i.append(int(i))
            rows_k.append(int(k))
    ii, kk = np.asarray(rows_i[:n_pairs]), np.asarray(rows_k[:n_pairs])
    out, flip = _judged_frame(world, ii, kk, rng, noise, with_category)
    log.info("judged pairs (simulated): %d pairs, %d keyphrases, %.1f%% relevant, %.1f%% labels flipped",
             len(out), out["keyphrase"].nunique(), 100 * out["label"].mean(), 100 * flip.mean())
    return out


def make_attribute_pairs(seed: int, n_items: int, n_pairs: int = 10_000, noise: float = 0.12,
                         with_category: bool = False, per_keyphrase: int = 6, positive_share: float = 0.5,
                         near_share: float = 0.6, lexical_share: float = 0.3, long_titles: bool = False) -> pd.DataFrame:
    """Up to ``n_pairs`` judged pairs whose relevance turns on attributes, as in real judged search logs.

    Only keyphrases with at least one constraint (brand, colour, size, material, model compatibility,
    count) are judged, and their negatives are what an engine's result page shows for them: **near misses**
    (the query's product type, every constraint met but one: "iphone 14" for "case for iphone 13", "size 9"
    for "size 10", another brand) and **lexical neighbours** (another product type that shares the query's
    model or brand: a screen protector for the iPhone 13 judged for "phone case for iphone 13", the
    accessory for the product). A bag of words sees almost the same text on both sides: a zero-shot encoder
    ranks these pairs fairly well overall and badly within a query, where a model that compares tokens
    (a cross-encoder) can learn the difference. The rest of the negatives are random items (of any type: a
    random item can happen to be relevant, rarely; its ``label`` and ``truth`` follow the truth, its
    ``negative`` tag stays ``random``).

    Args:
        seed, n_items, noise, with_category, per_keyphrase, positive_share: as ``make_judged_pairs``.
        near_share: share of a keyphrase's negatives that are near misses (when it has any).
        lexical_share: share that are lexical neighbours of another type (when it has any).
        long_titles: titles as long as a marketplace's (``seller_titles``) instead of the world's short ones.

    Returns:
        DataFrame with ``title, category, keyphrase`` (str), ``label`` and ``truth`` (int8 0/1), ``kind``
        (the keyphrase kind) and ``negative`` (``positive``, ``near_miss``, ``lexical``, ``random``).

    Raises:
        ValueError: on a noise outside [0, 0.5), fewer than 2 pairs, or shares outside [0, 1] summing above 1.
    """
    _check(noise, n_pairs)
    if min(near_share, lexical_share) < 0 or near_share + lexical_share > 1:
        raise ValueError(f"near_share {near_share} and lexical_share {lexical_share} must be >= 0 with a sum <= 1")
    world = _world(seed, n_items)
    items, kps, truth, _ = world
    rng = np.random.default_rng([seed, 78])
    by_type = {t: np.flatnonzero(truth.item_type == t) for t in np.unique(truth.item_type)}
    compat_j, brand_j = SLOTS.index("compat"), SLOTS.index("brand")
    all_items = np.arange(len(items))
    constrained = (truth.kp_codes >= 0).sum(axis=1)
    rows: list[tuple[int, int, str]] = []

    def pick(pool: np.ndarray, n: int) -> np.ndarray:
        return rng.choice(pool, min(n, len(pool)), replace=False) if n > 0 and len(pool) else np.empty(0, np.int64)

    for k in rng.permutation(len(kps)):
        if len(rows) >= n_pairs:
            break
        if constrained[k] == 0:
            continue
        same = by_type.get(truth.kp_type[k], np.empty(0, dtype=np.int64))
        rel, frac = truth.match_by_index(same, np.full(len(same), k))
        pos = same[rel]
        near = same[~rel & (frac >= (constrained[k] - 1) / constrained[k])]
        shared = np.zeros(len(items), dtype=bool)
        for j in (compat_j, brand_j):
            if truth.kp_codes[k, j] >= 0:
                shared |= truth.item_codes[:, j] == truth.kp_codes[k, j]
        lexical = np.flatnonzero(shared & (truth.item_type != truth.kp_type[k]))
        n_pos = min(len(pos), int(rng.binomial(per_keyphrase, positive_share)))
        n_neg = per_keyphrase - n_pos
        n_near = min(len(near), int(rng.binomial(n_neg, near_share)))
        n_lex = min(len(lexical), int(rng.binomial(n_neg - n_near, min(1.0, lexical_share / max(1e-9, 1 - near_share)))))
        chosen: dict[int, str] = {}
        for what, idx in (("positive", pick(pos, n_pos)), ("near_miss", pick(near, n_near)),
                          ("lexical", pick(lexical, n_lex)), ("random", pick(all_items, n_neg - n_near - n_lex))):
            for i in idx:
                chosen.setdefault(int(i), what)
        rows.extend((i, int(k), what) for i, what in chosen.items())
    rows = rows[:n_pairs]
    ii = np.asarray([r[0] for r in rows], dtype=np.int64)
    kk = np.asarray([r[1] for r in rows], dtype=np.int64)
    out, flip = _judged_frame(world, ii, kk, rng, noise, with_category, long_titles)
    out["negative"] = [r[2] for r in rows]
    log.info("judged pairs (simulated, attribute candidates): %d pairs, %d keyphrases, %.1f%% relevant, "
             "%.1f%% labels flipped, negatives %s", len(out), out["keyphrase"].nunique(), 100 * out["label"].mean(),
             100 * flip.mean(), out["negative"].value_counts().to_dict())
    return out


def world_pairs(name: str, n_pairs: int = 10_000) -> pd.DataFrame:
    """Judged pairs of a named development world (``WORLDS``)."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}: choose from {sorted(WORLDS)}")
    w = WORLDS[name]
    if w.get("candidates") == "open":
        from keyphrase_pipeline.synthetic.open_vocab import make_open_pairs

        return make_open_pairs(w["seed"], n_pairs=n_pairs, noise=w["noise"], positive_share=w["positive_share"])
    make = make_attribute_pairs if w.get("candidates") == "attributes" else make_judged_pairs
    extra = {"positive_share": w["positive_share"]} if "positive_share" in w else {}
    if w.get("long_titles"):
        extra["long_titles"] = True
    return make(w["seed"], w["items"], n_pairs=n_pairs, noise=w["noise"], with_category=w["with_category"], **extra)
