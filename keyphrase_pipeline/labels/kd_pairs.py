"""Extra pairs for distillation: unjudged (item, keyphrase) pairs the cross-encoder scores for the student.

Judged pairs alone give the student the same targets twice: the assistant's scores on its own training
pairs are close to the labels it memorised. Its value as a teacher is on pairs nobody judged, where it
generalises and the student would not (Augmented SBERT: Thakur et al., NAACL 2021, "Augmented SBERT: Data
Augmentation Method for Improving Bi-Encoders for Pairwise Sentence Scoring Tasks", which found
semantic-search sampling of the pairs to label the strongest choice). The pairs here are "ours": the
paper does not say which pairs its assistant scores.

Sampling: every train item is paired with its nearest train keyphrases under the start encoder (cosine,
full dimension), skipping pairs already judged or in the held-out split, until ``ratio`` x (train
pairs) extra pairs are drawn. Hard pairs, close to the decision boundary, carry the most information.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.models.ann import build_index
from keyphrase_pipeline.models.text import keyphrase_identity

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def nearest_keyphrases(item_emb: np.ndarray, keyphrase_emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of each item's ``k`` most similar keyphrases (inner product), best first: exact FAISS search
    (``models.ann.build_index`` with factory ``Flat``, as the recall gate's ground truth).

    Args:
        item_emb: ``(n_items, d)`` float32, rows L2-normalised.
        keyphrase_emb: ``(n_keyphrases, d)`` float32, rows L2-normalised.
        k: neighbours per item (clipped to ``n_keyphrases``).
    Returns:
        ``(n_items, k)`` int64.
    """

    k = min(k, keyphrase_emb.shape[0])
    index = build_index(keyphrase_emb, np.arange(len(keyphrase_emb), dtype=np.int64), "Flat")
    _, nn = index.search(np.ascontiguousarray(item_emb, dtype=np.float32), k)
    return nn.astype(np.int64)


class JudgedSides:
    """The distinct items (``title, category``) and keyphrases of the judged train pairs, each side encoded by
    the start encoder once, on first use (``sample_pairs`` and ``candidate_groups`` share one instance).

    ``item_emb``: ``(n_items, d)`` float32, ``keyphrase_emb``: ``(n_keyphrases, d)`` float32, rows L2-normalised."""

    def __init__(self, encoder, train) -> None:
        self.encoder = encoder
        self.items = train[["title", "category"]].drop_duplicates().reset_index(drop=True)
        self.keyphrases = train["keyphrase"].drop_duplicates().reset_index(drop=True)
        self._item_emb = self._keyphrase_emb = None

    @property
    def item_emb(self) -> np.ndarray:
        if self._item_emb is None:
            from keyphrase_pipeline.models import bi_encoder

            self._item_emb = bi_encoder.encode_items(self.encoder, self.items["title"].tolist(),
                                                     self.items["category"].tolist())
        return self._item_emb

    @property
    def keyphrase_emb(self) -> np.ndarray:
        if self._keyphrase_emb is None:
            from keyphrase_pipeline.models import bi_encoder

            self._keyphrase_emb = bi_encoder.encode_keyphrases(self.encoder, self.keyphrases.tolist())
        return self._keyphrase_emb


def sample_pairs(encoder, train, exclude_hashes, ratio: float, seed: int = 42, sides: JudgedSides | None = None):
    """Unjudged (title, category, keyphrase) pairs near the decision boundary, for the teacher to score.

    Args:
        encoder: a SentenceTransformer (the student's start model) used to find neighbours.
        train: frame of judged train pairs (``title, category, keyphrase, text_hash``).
        exclude_hashes: text_hashes never to emit (the held-out split; judged train pairs are always skipped).
        ratio: extra pairs per judged train pair; 0 returns an empty frame.
        seed: ties broken and the final cut drawn with this seed.
        sides: the train pairs' encoded items and keyphrases when already built (else built from ``encoder``).
    Returns:
        pandas DataFrame ``title, category, keyphrase, text_hash``, at most ``round(ratio * len(train))`` rows,
        no pair twice.
    """
    import pandas as pd

    from keyphrase_pipeline.labels.store import text_hash

    cols = ["title", "category", "keyphrase", "text_hash"]
    want = int(round(ratio * len(train)))
    if want <= 0 or train.empty:
        return pd.DataFrame(columns=cols)
    sides = sides or JudgedSides(encoder, train)
    items, keyphrases = sides.items, sides.keyphrases
    per_item = min(len(keyphrases), math.ceil(want / len(items)) + int(train.groupby(["title", "category"]).size().max()))
    nn = nearest_keyphrases(sides.item_emb, sides.keyphrase_emb, per_item)
    skip = set(train["text_hash"]) | set(exclude_hashes)
    rows, per = [], math.ceil(want / len(items))
    for i, (title, cat) in enumerate(zip(items["title"], items["category"])):
        taken = 0
        for j in nn[i]:
            keyphrase = keyphrases[j]
            h = text_hash(title, cat, keyphrase)
            if h in skip:
                continue
            skip.add(h)
            rows.append((title, cat, keyphrase, h))
            taken += 1
            if taken >= per:
                break
    out = pd.DataFrame(rows, columns=cols)
    if len(out) > want:
        out = out.sample(n=want, random_state=seed).reset_index(drop=True)
    log.info("distillation pairs: %d unjudged pair(s) near %d item(s) (ratio %.2f of %d judged train pairs)",
             len(out), len(items), ratio, len(train))
    return out


def title_queries(titles, n: int, seed: int = 42, min_words: int = 2, max_words: int = 5) -> list[str]:
    """Up to ``n`` distinct query-like texts cut from titles: a random span of ``min_words``..``max_words``
    consecutive words of a random title, lower-cased ("red running shoes size 10" from "Nike Red Running Shoes
    Size 10 NEW"). A stand-in for a query generator (GPL's doc2query step: Wang et al., NAACL 2022, "GPL:
    Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense Retrieval"): new anchors beyond the
    judged keyphrases, with the attributes titles carry, for the teacher to score.

    Returns a list of str (fewer than ``n`` when the titles do not hold that many distinct spans)."""
    rng = np.random.default_rng(seed)
    words = [str(t).lower().split() for t in titles]
    words = [w for w in words if len(w) >= min_words]
    out: dict[str, None] = {}
    for _ in range(20 * n):
        if len(out) >= n or not words:
            break
        w = words[int(rng.integers(len(words)))]
        size = int(rng.integers(min_words, min(max_words, len(w)) + 1))
        start = int(rng.integers(0, len(w) - size + 1))
        out.setdefault(" ".join(w[start:start + size]), None)
    return list(out)


# a token naming a value with an ASCII digit: "13", "a2633", "20ft", "kx-4521", "12.9", "1/10", "60%"
_VALUE_TOKEN = re.compile(r"[a-z]*[0-9][a-z0-9.\-/%]*", re.I | re.ASCII)


def swapped_value(token: str, rng: np.random.Generator) -> tuple[str, int]:
    """``token`` with one of its ASCII digits changed to another digit ("a2633" -> "a2693", "13" -> "18", "20ft" ->
    "70ft"): a value of the same shape that the judged pairs never named.

    Args:
        token: str holding at least one ASCII digit.
        rng: the draw of the position and the new digit.
    Returns:
        (the new token, the index of the changed character).
    Raises:
        ValueError: ``token`` has no ASCII digit."""
    at = [i for i, ch in enumerate(token) if "0" <= ch <= "9"]
    if not at:
        raise ValueError(f"no ASCII digit to swap in {token!r}")
    i = at[int(rng.integers(len(at)))]
    d = str((int(token[i]) + int(rng.integers(1, 10))) % 10)
    return token[:i] + d + token[i + 1:], i


def _value_pattern(value: str) -> re.Pattern:
    """``value`` as a whole token, any case: not inside a longer word or number ("13" is not in "13.3", "213",
    "6/13" or "a13")."""
    return re.compile(rf"(?<![0-9a-z])(?<![0-9][.,/]){re.escape(value)}(?![0-9a-z])(?![.,/][0-9])", re.I | re.ASCII)


def swap_groups(train, n_groups: int, group_size: int, skip: set, known_keyphrases: set, seed: int = 42):
    """Candidate lists anchored on judged keyphrases with one value swapped (counterfactual pairs): for a train
    keyphrase that names a value with a digit (a model code, a size, a device: "case for iphone 13"), the same
    keyphrase with one digit of that value changed ("case for iphone 18") is the anchor; its candidates are
    the keyphrase's judged titles that name the value, each twice: as it is (now a near miss) and with the same
    swap (now a match, if the original was), then other train titles to fill the list.

    The teacher scores every pair as usual; the student learns from them that a value must agree on both
    sides whatever the value is, not only for the values the judged pairs happened to name. Held-out
    queries name values the training half never saw (docs/TRAINING.md, the ``open`` world); this gives the
    student many such values. Counterfactual augmentation in the spirit of Kaushik et al., ICLR 2020
    ("Learning the Difference that Makes a Difference with Counterfactually-Augmented Data"); the recipe
    (digit swaps, lists for a cross-encoder teacher) is ours.

    Args:
        train: judged train pairs (``title, category, keyphrase``).
        n_groups: lists wanted (fewer when too few keyphrases name a value with a digit).
        group_size: candidates per list.
        skip: text_hashes never to emit; the emitted ones are added to it.
        known_keyphrases: ``keyphrase_identity`` of every keyphrase an anchor must not equal (train and held-out);
            each anchor used is added to it, so no anchor heads two lists.
        seed: the keyphrases' order, the swaps and the filling titles.
    Returns:
        list of ``(title, category, keyphrase, text_hash)`` lists, each exactly ``group_size`` long. Titles keep
        their case: only the digit changes ("Anker A2633" -> "Anker A2693"); every whole-token occurrence of the
        value in a title is swapped. Titles and keyphrases must be str (``training_data`` cleans a labels file).
    """
    from keyphrase_pipeline.labels.store import text_hash

    rng = np.random.default_rng([seed, 5])
    by_kp = train.groupby("keyphrase", sort=True)[["title", "category"]]
    titles = train[["title", "category"]].drop_duplicates().to_numpy(object)
    names = [(k, [m.group(0) for m in _VALUE_TOKEN.finditer(k)]) for k in by_kp.groups]
    names = [(k, v) for k, v in names if v]
    groups: list[list[tuple]] = []
    if not names or len(titles) < group_size:
        return groups
    order = np.resize(rng.permutation(len(names)), 4 * n_groups)   # a swap drawn twice makes no second list
    for a in order:
        if len(groups) >= n_groups:
            break
        keyphrase, values = names[int(a)]
        value = values[int(rng.integers(len(values)))]
        swapped, at = swapped_value(value, rng)
        bound = _value_pattern(value)

        def swap(m: re.Match, at: int = at, digit: str = swapped[at]) -> str:   # keeps the text's own case
            return m.group(0)[:at] + digit + m.group(0)[at + 1:]

        anchor = bound.sub(swap, keyphrase, count=1)
        if keyphrase_identity(anchor) in known_keyphrases:
            continue
        chosen: dict[str, tuple] = {}

        def take(title: str, category: str, chosen: dict = chosen, anchor: str = anchor) -> None:
            h = text_hash(title, category, anchor)
            if h not in skip and len(chosen) < group_size:
                chosen.setdefault(h, (title, category, anchor, h))

        judged = by_kp.get_group(keyphrase).drop_duplicates().to_numpy(object)
        naming = [(t, c) for t, c in judged if bound.search(t)]
        if not naming:
            continue
        for t, c in naming[: group_size // 2]:
            take(bound.sub(swap, t), c)   # the swap on both sides: the judged title's counterpart
            take(t, c)                    # the title as judged: now it names another value
        for i in rng.integers(len(titles), size=4 * group_size):   # other titles to fill the list
            if len(chosen) >= group_size:
                break
            take(*titles[i])
        if len(chosen) == group_size:
            skip.update(chosen)
            known_keyphrases.add(keyphrase_identity(anchor))
            groups.append(list(chosen.values()))
    return groups


def candidate_groups(encoder, train, exclude_hashes, n_pairs: int, group_size: int = 8, hard_share: float = 0.75,
                     query_share: float = 0.0, seed: int = 42, exclude_keyphrases=(), sides: JudgedSides | None = None,
                     swap_share: float = 0.0):
    """Unjudged candidate lists for listwise distillation: one anchor with ``group_size`` candidates from the
    other side, the way search and the pipeline pair them.

    Anchors, in three kinds:

    * ``keyphrase``: a train keyphrase with the train titles the start encoder retrieves as nearest (hard
      candidates, ``hard_share`` of each list) plus random titles, as a search engine's result page;
    * ``query`` (``query_share`` of the lists): a query cut from a title (``title_queries``), with titles as
      for a keyphrase: anchors the judged pairs never had, so the student learns how the teacher treats new
      queries and not only the judged ones;
    * ``item``: a train item with its nearest train keyphrases plus random ones (how ``recommend`` pairs them);
    * ``swap`` (``swap_share`` of the lists): a judged keyphrase with one digit of a value it names changed, with
      its judged titles as they are and with the same swap (``swap_groups``).

    The lists not anchored on queries are split evenly between keyphrases and items. An anchor that heads
    several lists takes the next window of its neighbour list each time, so no candidate repeats. Judged train
    pairs and held-out pairs are never emitted; no pair twice.

    The teacher (cross-encoder) scores every pair afterwards; the student learns each list's ordering
    (``models.losses.build_listwise_kd_loss``). ``sentence_transformers.util.mine_hard_negatives`` is not used:
    it mines around judged positives, and its cross-encoder rescoring reads the towers' text, not the
    assistant's ``keyphrase [SEP] category [SEP] title`` input.

    Args:
        encoder: a SentenceTransformer (the student's start model) used to find neighbours.
        train: frame of judged train pairs (``title, category, keyphrase, text_hash``).
        exclude_hashes: text_hashes never to emit (the held-out split).
        n_pairs: about how many pairs to draw in all (rounded down to whole lists).
        group_size: candidates per list (>= 2).
        hard_share: share of each list from the anchor's nearest neighbours, the rest random.
        query_share: share of the lists anchored on queries cut from titles, in [0, 1].
        swap_share: share of the lists anchored on value-swapped keyphrases, in [0, 1] (with ``query_share`` at
            most 1); lists it cannot make (too few keyphrases name a value with a digit) go to the other anchors.
        seed: random candidates, the queries and the anchors' order.
        exclude_keyphrases: keyphrases a title-cut query must never equal (the held-out split's; the train
            keyphrases are always excluded), compared as ``kp eval-labels`` splits them (lower-cased tower text).
        sides: the train pairs' encoded items and keyphrases when already built (else built from ``encoder``).
    Returns:
        pandas DataFrame ``group, anchor, title, category, keyphrase, text_hash`` (``anchor``: ``keyphrase``,
        ``query``, ``item`` or ``swap``), exactly ``group_size`` rows per group in a list's candidate order. A side with
        fewer than ``group_size`` candidates (titles for keyphrase and query lists, keyphrases for item lists)
        gives its lists to the other; an anchor whose unjudged candidates run out makes no list. Empty (same
        columns) when ``n_pairs < group_size`` or neither side has ``group_size`` candidates.
    Raises:
        ValueError: ``group_size < 2``, or ``hard_share``, ``query_share``, ``swap_share`` or their sum outside [0, 1].
    """
    import pandas as pd

    from keyphrase_pipeline.labels.store import text_hash

    if group_size < 2 or not 0 <= hard_share <= 1 or not (0 <= query_share and 0 <= swap_share
                                                          and query_share + swap_share <= 1):
        raise ValueError(f"group_size must be >= 2, hard_share, query_share, swap_share and query + swap share in "
                         f"[0, 1], got {group_size}, {hard_share}, {query_share}, {swap_share}")
    cols = ["group", "anchor", "title", "category", "keyphrase", "text_hash"]
    n_groups = n_pairs // group_size if len(train) else 0
    sides = sides or JudgedSides(encoder, train)
    items, keyphrases = sides.items, sides.keyphrases
    # keyphrase- and query-anchored lists need group_size titles, item-anchored ones group_size keyphrases: a
    # side that cannot fill a list gives its share to the other
    on_titles, on_keyphrases = len(items) >= group_size, len(keyphrases) >= group_size
    if n_groups == 0 or not (on_titles or on_keyphrases):
        return pd.DataFrame(columns=cols)
    skip = set(train["text_hash"]) | set(exclude_hashes)
    known = {keyphrase_identity(k) for k in [*keyphrases, *exclude_keyphrases]}   # no new anchor may equal these
    swapped: list[list[tuple]] = []
    if swap_share and on_titles:   # swap_groups adds its anchors to the set it gets: give it its own copy
        swapped = swap_groups(train, int(round(n_groups * swap_share)), group_size, skip, set(known), seed)
    n_query = min(int(round(n_groups * query_share)) if on_titles else 0, n_groups - len(swapped))
    rest = n_groups - n_query - len(swapped)
    n_kp = ((rest + 1) // 2 if on_keyphrases else rest) if on_titles else 0
    want = {"keyphrase": n_kp, "query": n_query, "item": rest - n_kp}
    rng = np.random.default_rng(seed)
    anchors = {"keyphrase": keyphrases.tolist(), "item": None, "query": []}
    if n_query:
        anchors["query"] = [q for q in title_queries(items["title"], 2 * n_query, seed)
                            if keyphrase_identity(q) not in known]
    judged_per = {"keyphrase": int(train.groupby("keyphrase").size().max()),
                  "item": int(train.groupby(["title", "category"]).size().max()), "query": 0}
    n_hard = int(round(group_size * hard_share))
    rows: list[tuple] = []
    group = 0
    for lst in swapped:
        rows.extend((group, "swap", *pair) for pair in lst)
        group += 1
    for side in ("keyphrase", "query", "item"):
        n_anchors = len(sides.items) if side == "item" else len(anchors[side])
        if want[side] == 0 or n_anchors == 0:
            continue
        order = np.resize(rng.permutation(n_anchors), want[side])
        used = np.unique(order)          # search only the anchors that head a list
        if side == "item":
            anchor_emb, cand_emb = sides.item_emb[used], sides.keyphrase_emb
        elif side == "keyphrase":
            anchor_emb, cand_emb = sides.keyphrase_emb[used], sides.item_emb
        else:
            from keyphrase_pipeline.models.bi_encoder import encode_keyphrases

            anchor_emb, cand_emb = encode_keyphrases(sides.encoder, [anchors["query"][i] for i in used]), sides.item_emb
        row_of = {int(a): r for r, a in enumerate(used)}

        def pair(a: int, c: int, side: str = side) -> tuple[str, str, str]:
            if side == "item":
                return items["title"][a], items["category"][a], keyphrases[c]
            return items["title"][c], items["category"][c], anchors[side][a]

        per_anchor = math.ceil(want[side] / len(used))
        # deep enough for every list an anchor heads, past the neighbours that are judged already
        depth = min(len(cand_emb), per_anchor * (n_hard + group_size) + judged_per[side])
        nn = nearest_keyphrases(anchor_emb, cand_emb, depth)   # anchor -> candidates, best first
        cursor = np.zeros(len(used), dtype=np.int64)
        for a in order:
            r = row_of[int(a)]
            chosen: dict[str, tuple] = {}

            def take(c: int, a: int = a, chosen: dict = chosen) -> None:
                t, cat, k = pair(int(a), int(c))
                h = text_hash(t, cat, k)
                if h not in skip:
                    chosen.setdefault(h, (t, cat, k))

            while len(chosen) < n_hard and cursor[r] < depth:
                take(nn[r, cursor[r]])
                cursor[r] += 1
            for _ in range(20 * group_size):
                if len(chosen) >= group_size:
                    break
                take(rng.integers(len(cand_emb)))
            if len(chosen) < group_size:
                continue
            skip.update(chosen)
            rows.extend((group, side, *v, h) for h, v in chosen.items())
            group += 1
    out = pd.DataFrame(rows, columns=cols)
    log.info("listwise distillation: %d list(s) of %d unjudged pair(s) (%d hard, the rest random) for the "
             "teacher to score, by anchor %s", group, group_size, n_hard,
             out.groupby("anchor")["group"].nunique().to_dict())
    return out


def teacher_scores(settings: Settings, cross_model_dir: str, pairs) -> "object":
    """Cross-encoder P(relevant) for ``pairs`` (frame with text_hash, title, category, keyphrase): stored soft
    labels where the teacher already scored the text, scored now otherwise.

    Returns a float32 ``np.ndarray`` of shape ``(len(pairs),)``, values in [0, 1], aligned with ``pairs``'
    rows. Raises ConfigError (exit 2) when pairs must be scored and ``cross_model_dir`` has no ``config.json``."""
    import pandas as pd

    soft_path = Path(layout.version_file(Path(cross_model_dir).parent, "soft_labels"))
    scores = pd.Series(np.nan, index=pairs.index, dtype="float64")
    if soft_path.exists():
        soft = pd.read_parquet(soft_path, columns=["text_hash", "score"]).drop_duplicates("text_hash")
        scores = pairs["text_hash"].map(soft.set_index("text_hash")["score"]).astype("float64")
    missing = scores.isna().to_numpy()
    if missing.any():
        from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs

        log.info("scoring %d pair(s) with the cross-encoder (no stored soft label)", int(missing.sum()))
        model = load_cross(cross_model_dir, settings.train.device)
        sub = pairs[missing]
        scores[missing] = predict_pairs(model, sub["title"].tolist(), sub["category"].tolist(), sub["keyphrase"].tolist())
    return scores.to_numpy(dtype="float32")
