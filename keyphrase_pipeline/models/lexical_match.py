"""The student's hybrid score: its cosine plus a learned bonus for the keyphrase's words the item's text holds.

Why: a bi-encoder squeezes an item into one vector, and exact tokens that decide relevance (a size, a capacity, a
model number: ``20w``, ``256gb``, ``a2337``) are the first thing the squeeze loses; the cross-encoder, which reads
both texts together, keeps them. Luan et al. (2021, "Sparse, Dense, and Attentional Representations for Text
Retrieval", TACL 9) show a fixed-size dual encoder's precision falls on exactly such rare-token matches and that a
linear mix of the dense score with a sparse (lexical) one recovers it. We keep the mix that small: three
features of the pair's word overlap, weighted by a logistic regression fitted on judged pairs after the student
is trained (``stages.train_bi``), kept only when it lifts the held-out AUC, and stored with the model
(``kp_model.json`` ``hybrid``).

Features (``FEATURES``; ``match_features``), over word tokens (``tokens``): maximal runs of letters and digits of
the lower-cased ``models.text.clean`` text (``20W-USB`` -> ``20w``, ``usb``) with, since ``features_version`` 2,
numbers and quantities written one way (``UNITS``, ``_REWRITES``): a decimal is one number without trailing zeros
(``2.5``, ``5.0`` -> ``5``; ``1,5 kg`` -> ``1.5kg``, ``10,000mAh`` -> ``10000mah`` before a unit only); a number and its
unit are one token whether the text joins them or not (across a space or hyphen, and only for a unit of two or more
letters other than ``in``, which are also words: ``Series 9 w/ GPS``, ``iPhone 15 in Pink`` keep theirs), the unit in
one spelling (``128 GB``, ``128-gb``, ``128GB``, ``128 gigabytes`` -> ``128gb``; ``65"``, ``65 inch`` -> ``65in``;
``24 pack``, ``24 pcs``, ``24 Count``, ``pack of 24`` -> ``24ct``); a unit that ends a range or a list is carried to
each of its numbers (``32-75 inch``, ``32/64/128 GB``, ``8, 10, 12 inch``, ``24 x 36 inch`` for lengths; not a
fraction, ``1/2 inch``). A keyphrase's token is found in the item's text when the item has it or, for a size in inches
(``_found``; buyers and sellers often drop its unit), when the item has the number on its own and states no size
(``65 inch`` in "Samsung 65 QLED"), has the size with that whole part (``15 inch`` in "15.6 inch"), or, for a number
on its own in a keyphrase that states no size, has it as a size (``65`` in "65 Inch"). A quantity in another unit is
not found (``8 lb`` in "8 Pack", which version 1 found), nor a count, capacity or length in a bare number or the
reverse (``16gb`` in "MacBook Pro 16", ``iphone 12`` in "12FT drop protection"): a bare number is as often a model.
For inches the fallback keeps version 1's false matches of a spaced unit (``iphone 16`` in "Laptop Sleeve 16 inch",
``10 inch tablet`` in "Size 10 Shoes").
The item's tokens are its title's and category's:

* ``query_token_share``: the share of the keyphrase's distinct tokens found among the item's (0 for a keyphrase
  without tokens);
* ``attribute_token_share``: the same over the keyphrase's *attribute tokens*, those with a digit (sizes,
  capacities, model numbers, years); 1.0 when it has none (nothing to miss);
* ``attribute_tokens_missing``: how many of its attribute tokens the item's text lacks.

Score: ``cosine + features @ (weights / cosine_weight)`` (``HybridScore.score``), the logistic regression's
decision function divided by its (positive) cosine weight, less its intercept: the same order, in cosine units
but not within [-1, 1] (the bonus can be negative or above 1 - cosine). The student's stored threshold is on this
scale; ``serve.score_threshold`` still cuts the FAISS search on the cosine alone. The fit weighs the features by
what they are worth on the judged pairs, so on data where they say nothing their weights are small and the held-out
check drops them.

Versions (``features_version``, stored with each fit): 1, the same token only (``256 GB`` did not match ``256gb``);
2 (``FEATURES_VERSION``, what ``train-bi`` fits now), quantities as above. A stored score is served with the version
it was fitted with, so a student trained with version 1 scores as it did.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from keyphrase_pipeline.models.text import clean

FEATURES = ("query_token_share", "attribute_token_share", "attribute_tokens_missing")
FEATURES_VERSION = 2  # how tokens and features are computed (module docstring); new fits are of this version
VERSIONS = (1, 2)  # the versions this code computes, and so serves; a stored score of another is refused
MAX_RATIO = 1e6  # the largest weight per unit of cosine fitted or stored (fits seen: 0.001-47; beyond, the
# cosine says next to nothing and a bonus could overflow float32)
_WORD = re.compile(r"[^\W_]+")  # a maximal run of letters and digits (Unicode), underscores excluded
_WORD_V2 = re.compile(r"\d+\.\d+[^\W\d_]*|[^\W_]+")  # version 2: a decimal is one word (2.5, 1.5tb)
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)([^\W\d_]+)")  # a number and the letters after it, the whole word


def _spellings(canonical: str, *others: str) -> dict[str, str]:
    return dict.fromkeys((canonical, *others), canonical)


# The units a quantity is written in on product titles and queries, each spelling -> the one spelling tokens use.
# Only after a number; "x" (2 x 4) and "a" (an article, and Pixel 5a) are left out: 10a is a word, 10 amp a quantity.
UNITS = {
    **_spellings("kb", "kilobyte", "kilobytes"), **_spellings("mb", "megabyte", "megabytes"),
    **_spellings("gb", "gbs", "gigabyte", "gigabytes"), **_spellings("tb", "terabyte", "terabytes"),
    **_spellings("w", "watt", "watts"), **_spellings("kw", "kilowatt", "kilowatts"), **_spellings("v", "volt", "volts"),
    **_spellings("amp", "amps", "ampere", "amperes"), "mah": "mah", "ah": "ah", "wh": "wh", **_spellings("hz", "hertz"),
    "khz": "khz", "mhz": "mhz",
    "ghz": "ghz", **_spellings("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    **_spellings("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    **_spellings("m", "meter", "meters", "metre", "metres"), **_spellings("km", "kilometer", "kilometers"),
    **_spellings("in", "inch", "inches"), **_spellings("ft", "foot", "feet"), **_spellings("yd", "yard", "yards"),
    **_spellings("oz", "ounce", "ounces", "floz"), **_spellings("lb", "lbs", "pound", "pounds"),
    **_spellings("g", "gram", "grams"), **_spellings("kg", "kilogram", "kilograms", "kilo", "kilos"),
    **_spellings("mg", "milligram", "milligrams"), **_spellings("ml", "milliliter", "milliliters", "millilitre"),
    **_spellings("l", "liter", "liters", "litre", "litres"), **_spellings("gal", "gallon", "gallons"),
    **_spellings("qt", "quart", "quarts"),
    # a count, however a seller or a buyer writes it: 24 pack, 24 pk, 24 pcs, 24 count, 24ct
    **_spellings("ct", "count", "cnt", "pack", "packs", "pk", "pc", "pcs", "piece", "pieces"),
    "mp": "mp", "k": "k", "p": "p", "rpm": "rpm", "mph": "mph", "db": "db", "cc": "cc",
}
# joined across a space or hyphen only when the spelling is not also a word or a size: "9 w/ gps", "15 in pink",
# "10 M US" (a shoe size) stay apart; attached (9w, 65in, 10m) they are quantities
_SPACED_UNITS = frozenset(u for u in UNITS if len(u) > 1 and u != "in")
_CANONICAL_UNITS = frozenset(UNITS.values())
# a quantity whose number stands for it, and the reverse, in matching (``_found``): sizes, where a buyer and a seller
# often drop the unit (65 inch TV, Samsung 65 QLED); not counts, capacities or lengths, where a bare number is as
# often a model (iphone 12 against 12FT drop protection, macbook pro 16 against 16GB)
_SIZE_UNITS = frozenset({"in"})


_UNIT = "(?:" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")\b"  # any spelling, longest first


# before tokens are read, version 2 rewrites a number written several ways into one: round thousands before a unit
# (10,000mAh -> 10000mAh; not 64,128,256GB nor 400,600,800 grit), a decimal comma before a unit and outside a list
# (1,5 kg -> 1.5 kg; not iPhone 12,13), a leading dot before a unit (.5 oz -> 0.5 oz; not .22 caliber), an inch mark
# after a number (65" -> 65in; NFKC writes a double prime as two primes; not "A2337"), fluid ounces (fl oz -> oz),
# and "pack of 24" (-> 24 ct; not "bag of 5 lb")
_REWRITES = (
    (re.compile(r"(?<![\d,])(\d{1,3})((?:,\d00)+)(?!,?\d)(?=\s?" + _UNIT + ")"),  # round: not 64,128,256
     lambda m: m[1] + m[2].replace(",", "")),
    (re.compile(r"(?<![\d,.])(\d+),(\d{1,2})(?![\d,])(?=\s?" + _UNIT + ")"), r"\1.\2"),
    (re.compile(r"(?<![\w.])\.(?=\d+\s?" + _UNIT + ")"), "0."),
    (re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(?:\"|''|\u2032\u2032|\u201d|\u2033)"), r"\1in "),
    (re.compile(r"\bfl\.?\s?(?=oz\b)"), ""),
    (re.compile(r"\b(?:pack|pk|set) of (\d+)\b(?!\s?" + _UNIT + ")"), r"\1 ct"),
)
_JOIN_GAP = re.compile(r"\s*-?\s*")  # a number and a unit word are one quantity across a space or a hyphen
_LIST_GAP = re.compile(r"\s*(?:-|\u2013|/|,|&)\s*")  # 32-75 inch, 32/64/128 GB, 8, 10, 12 inch
_LENGTHS = frozenset({"mm", "cm", "m", "in", "ft", "yd"})
_DENOMINATORS = frozenset({"2", "3", "4", "8", "16"})  # 1/2 inch, 3/4, 1/16: a fraction, not a list


@functools.lru_cache(maxsize=200_000, typed=True)
def tokens(text: object, version: int = FEATURES_VERSION) -> frozenset[str]:
    """The distinct word tokens of ``text`` (module docstring): lower-cased runs of letters and digits of
    ``models.text.clean(text)``, and for ``version`` 2 numbers and quantities written one way (``UNITS``: ``128 GB``
    -> ``128gb``; a unit shared by a range or a list carried to each of its numbers, which stay too: ``32-75 inch`` ->
    ``32``, ``32in``, ``75in``); an empty set for None, NaN or a text without any. Cached (a keyphrase is met once
    per item it is a candidate for). Raises ValueError for a version not in ``VERSIONS``."""
    if isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"features_version {version!r}; this code computes {list(VERSIONS)}")
    text = clean(text).lower()
    if version == 1:
        return frozenset(_WORD.findall(text))
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    words: list[list[str]] = []  # [token, the text between it and the word before]
    end = 0
    for m in _WORD_V2.finditer(text):
        word, gap, end = m[0], text[end:m.start()], m.end()
        quantity = _QUANTITY.fullmatch(word)
        if words and word in _SPACED_UNITS and _is_number(words[-1][0]) and _JOIN_GAP.fullmatch(gap):
            words[-1][0] += UNITS[word]  # "128", "gb" -> "128gb"
        elif quantity and quantity[2] in UNITS:
            words.append([_plain(quantity[1]) + UNITS[quantity[2]], gap])
        elif _is_number(word):
            words.append([_plain(word), gap])
        else:  # a decimal with letters that are not a unit (1.5x) splits as in version 1
            words.extend([w, gap] for w in (_WORD.findall(word) if "." in word else (word,)))
    out = {w for w, _ in words}
    for i, (word, _) in enumerate(words):  # carry a quantity's unit back over the range or list it ends
        quantity = _quantity(word)
        j = i
        while quantity and j > 0:
            if _is_number(words[j - 1][0]) and _LIST_GAP.fullmatch(words[j][1]):
                j -= 1
            elif quantity[1] in _LENGTHS and j > 1 and words[j - 1][0] == "x" and _is_number(words[j - 2][0]):
                j -= 2  # 24 x 36 inch: for a length only (2 x 16GB is two of 16GB)
            else:
                break
        run = [w for w, _ in words[j:i] if w != "x"]
        fraction = any("/" in words[k][1] and _fraction(words[k - 1][0], words[k][0]) for k in range(j + 1, i + 1))
        if run and not fraction:
            out.update(n + quantity[1] for n in run)
    return frozenset(out)


def _fraction(numerator: str, denominator: str) -> bool:
    """1/2, 3/4, 1/16 (the denominator may carry the unit: 2in): a fraction, not a list of two numbers."""
    d = _QUANTITY.fullmatch(denominator)
    d = d[1] if d else denominator
    return numerator.isdigit() and d in _DENOMINATORS and int(numerator) < int(d)


def _is_number(word: str) -> bool:
    head, _, tail = word.partition(".")
    return head.isdigit() and (not tail or tail.isdigit())


def _plain(number: str) -> str:
    """A number written one way: a decimal without trailing zeros (3.0 -> 3, 2.50 -> 2.5)."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def _quantity(word: str, units: frozenset[str] = _CANONICAL_UNITS) -> tuple[str, str] | None:
    """(number, unit) of a version 2 quantity token in one of ``units`` (``128gb`` -> ``("128", "gb")``), else None."""
    m = _QUANTITY.fullmatch(word)
    return (m[1], m[2]) if m and m[2] in units else None


def _found(query: frozenset[str], item: frozenset[str], version: int) -> frozenset[str]:
    """The query's tokens the item's text holds. Version 1: the same token. Version 2 also, for a size
    (``_SIZE_UNITS``): the size when the item has its number on its own and states no size (``65 inch`` in "Samsung
    65 QLED"), a whole size in the item's size with that whole part (``15 inch`` in "15.6 inch", as version 1 found
    it by splitting 15.6), and a number on its own when it is an item's size, or its whole part, and the query states
    none (``65`` in "65 Inch"). A quantity in another unit is not found (``8 lb`` is not in "8 Pack"), nor a count,
    capacity or length in a bare number (``16gb`` is not in "MacBook Pro 16")."""
    if version == 1:
        return query & item
    item_sizes, classes, size_numbers = _item_sizes(item)
    query_sizes = _sizes(query)
    if query_sizes:  # the query's sizes: its number on its own in an item stating no size, or its whole-size class
        return (query & item) | frozenset(t for t, (n, _) in query_sizes.items()
                                          if (n in item and not item_sizes) or t in classes)
    return (query & item) | (query & size_numbers)  # a bare number that is an item's size, or its whole part


@functools.lru_cache(maxsize=200_000)
def _sizes(words: frozenset[str]) -> dict[str, tuple[str, str]]:
    """The sizes (``_SIZE_UNITS``) among version 2 tokens: token -> (number, unit); read only (cached: an item meets
    each of its candidate keyphrases, a keyphrase each of its items)."""
    return {w: q for w in words if (q := _quantity(w, _SIZE_UNITS))}


@functools.lru_cache(maxsize=200_000)
def _item_sizes(item: frozenset[str]) -> tuple[frozenset, frozenset[str], frozenset[str]]:
    """An item's sizes read once for all its candidates (cached): its (number, unit) pairs, their whole-size classes
    (a 15.6in laptop is a 15in laptop: ``15in``) and their numbers, whole parts too (``15.6``, ``15``)."""
    sizes = frozenset(_sizes(item).values())
    return (sizes, frozenset(n.partition(".")[0] + u for n, u in sizes),
            frozenset(n for n, _ in sizes) | frozenset(n.partition(".")[0] for n, _ in sizes))


@functools.lru_cache(maxsize=200_000)
def _attributes(words: frozenset[str]) -> frozenset[str]:
    """The tokens with a digit (cached: a keyphrase is a candidate of many items)."""
    return frozenset(w for w in words if any(ch.isdigit() for ch in w))


@functools.lru_cache(maxsize=200_000, typed=True)
def _item_tokens(title: object, category: object, version: int) -> frozenset[str]:
    """``tokens(title) | tokens(category)``, one object per item (cached: an item meets each of its candidates in a row,
    and the set's hash is computed once)."""
    return tokens(title, version) | tokens(category, version)


def match_features(titles, categories, keyphrases, version: int = FEATURES_VERSION) -> np.ndarray:
    """The lexical match features (``FEATURES``, module docstring) of each (item, keyphrase) pair.

    Args:
        titles, categories, keyphrases: equal-length sequences (str, None or NaN); row ``i`` is the item
            (``titles[i]``, ``categories[i]``) against ``keyphrases[i]``.
        version: the ``features_version`` whose ``tokens`` to use.
    Returns:
        ``np.ndarray`` of shape ``(n, len(FEATURES))``, float32; shares in [0, 1], the missing count >= 0.
    Raises:
        ValueError: the sequences differ in length; a version not in ``VERSIONS``.
    """
    if not len(titles) == len(categories) == len(keyphrases):
        raise ValueError(f"titles, categories and keyphrases differ in length: {len(titles)}, {len(categories)}, "
                         f"{len(keyphrases)}")
    out = np.zeros((len(titles), len(FEATURES)), dtype=np.float32)
    for i, (title, category, keyphrase) in enumerate(zip(titles, categories, keyphrases)):
        item, query = _item_tokens(title, category, version), tokens(keyphrase, version)
        attributes, hits = _attributes(query), _found(query, item, version)
        found = len(attributes & hits)
        out[i, 0] = len(hits) / len(query) if query else 0.0
        out[i, 1] = found / len(attributes) if attributes else 1.0
        out[i, 2] = len(attributes) - found
    return out


@dataclass(frozen=True)
class HybridScore:
    """A fitted hybrid score (module docstring). ``cosine_weight`` (> 0) and ``weights`` (one per feature of
    ``features``) are the logistic regression's coefficients; ``pairs`` the judged pairs it was fitted on;
    ``features_version`` the tokenisation it was fitted with (one of ``VERSIONS``), which ``score`` uses."""

    cosine_weight: float
    weights: tuple[float, ...]
    features: tuple[str, ...] = FEATURES
    pairs: int = 0
    features_version: int = FEATURES_VERSION

    def bonus(self, features: np.ndarray) -> np.ndarray:
        """What the lexical features add to the cosine: ``features @ (weights / cosine_weight)``, float32 ``(n,)``
        for ``features`` ``(n, len(self.features))``."""
        return (np.asarray(features, dtype=np.float64) @ (np.asarray(self.weights) / self.cosine_weight)).astype(np.float32)

    def score(self, cosines, titles, categories, keyphrases) -> np.ndarray:
        """The hybrid score, float32 ``(n,)``: ``cosines`` (the student's, at ``serve.dim``, aligned with the pairs)
        plus ``bonus(match_features(titles, categories, keyphrases, self.features_version))``. Raises ValueError on
        unequal lengths."""
        cosines = np.asarray(cosines, dtype=np.float32)
        if len(cosines) != len(titles):
            raise ValueError(f"{len(cosines)} cosines for {len(titles)} pairs")
        return cosines + self.bonus(match_features(titles, categories, keyphrases, self.features_version))

    def as_dict(self) -> dict:
        """What ``kp_model.json`` stores under ``hybrid``."""
        return {"cosine_weight": self.cosine_weight, "weights": dict(zip(self.features, self.weights)),
                "pairs": self.pairs, "features_version": self.features_version}

    @classmethod
    def from_dict(cls, value) -> HybridScore | None:
        """The score ``as_dict`` stored, or None for None or ``{}`` (no hybrid score). Raises ValueError, naming the
        problem, for anything else that is not such a record: not a dict (``false``, ``0``, a list, a string), a
        ``features_version`` not in ``VERSIONS`` (a record without one is version 1, the only one before versions
        were stored), a feature this code does not compute or one it computes missing, a weight that is not
        a finite number, a cosine weight that is not positive, a weight per unit of cosine beyond ``MAX_RATIO`` (the
        bonus would overflow float32), a ``pairs`` that is not a count."""
        if value is None or (isinstance(value, dict) and not value):
            return None
        if not isinstance(value, dict) or not isinstance(value.get("weights"), dict):
            raise ValueError(f"hybrid score {value!r}: not a record of cosine_weight and weights")
        version = value.get("features_version", 1)
        if isinstance(version, bool) or version not in VERSIONS:
            raise ValueError(f"hybrid score of features_version {version!r}; this code computes versions "
                             f"{list(VERSIONS)}")
        weights = value["weights"]
        unknown, missing = sorted(set(weights) - set(FEATURES)), [f for f in FEATURES if f not in weights]
        if unknown or missing:
            raise ValueError(f"hybrid score {value!r}: unknown features {unknown}, missing features {missing}; it needs "
                             f"a weight for each of {list(FEATURES)}")
        numbers = {"cosine_weight": value.get("cosine_weight"), **weights}
        bad = [k for k, v in numbers.items() if not _finite_number(v)]
        if bad:
            raise ValueError(f"hybrid score {value!r}: {bad} not a finite number")
        cosine_weight = float(value["cosine_weight"])
        if cosine_weight <= 0:
            raise ValueError(f"hybrid score {value!r}: cosine_weight {cosine_weight} is not positive")
        with np.errstate(over="ignore"):
            ratios = np.array([float(weights[f]) for f in FEATURES]) / cosine_weight
        if not (np.isfinite(ratios).all() and (np.abs(ratios) <= MAX_RATIO).all()):
            raise ValueError(f"hybrid score {value!r}: a weight per unit of cosine beyond {MAX_RATIO:g} (the cosine "
                             "weight is too small for the others)")
        pairs = value.get("pairs", 0)
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 0:
            raise ValueError(f"hybrid score {value!r}: pairs {pairs!r} is not a count of judged pairs")
        return cls(cosine_weight, tuple(float(weights[f]) for f in FEATURES), FEATURES, pairs, int(version))


def _finite_number(v) -> bool:
    """An int or float (not a bool) that converts to a finite float64 (a 400-digit int does not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:
        return False


def fit_hybrid(cosines, features, labels, seed: int = 0,
               features_version: int = FEATURES_VERSION) -> HybridScore | None:
    """Fit the hybrid score on judged pairs: scikit-learn's ``LogisticRegression`` (L2, C=1) of ``labels`` on
    [``cosines``, ``features``].

    Args:
        cosines: float ``(n,)``, the student's cosines at ``serve.dim``.
        features: float ``(n, len(FEATURES))`` from ``match_features`` at ``features_version``.
        labels: ``(n,)`` 0/1 (probabilities are cut at 0.5).
        seed: the solver's ``random_state``.
        features_version: the tokenisation ``features`` were computed with, stored with the fit.
    Returns:
        the ``HybridScore``, or None when the labels are all in one class, the fitted cosine weight is not
        positive (the student's cosine would not order the pairs: no hybrid on its scale) or so small that a
        feature's weight per unit of cosine exceeds ``MAX_RATIO`` (the cosine would say next to nothing, and the
        record could not be stored: ``HybridScore.from_dict``).
    """
    from sklearn.linear_model import LogisticRegression

    y = (np.asarray(labels, dtype=np.float64) >= 0.5).astype(int)
    if len(np.unique(y)) < 2:
        return None
    x = np.column_stack([np.asarray(cosines, dtype=np.float64), np.asarray(features, dtype=np.float64)])
    fitted = LogisticRegression(max_iter=2000, random_state=seed).fit(x, y)
    coef = fitted.coef_[0]
    if coef[0] <= 0 or (np.abs(coef[1:]) > MAX_RATIO * coef[0]).any():  # the second: not storable (from_dict)
        return None
    return HybridScore(float(coef[0]), tuple(float(w) for w in coef[1:]), FEATURES, int(len(y)), features_version)
