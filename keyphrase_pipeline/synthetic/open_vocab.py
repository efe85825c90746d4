"""The ``open`` development world: judged attribute queries whose values mostly never repeat (demo/dev only).

Why it exists (issue 25). On ~14,000 real human judgments split by query, the cross-encoder gained +0.051 AUC
over the untrained encoder and the student inherited a third of it, while on the closed worlds (demo, alt,
attr, listing) the student inherits most of its teacher's gain. Those worlds draw every attribute value from
short lists (ten phones, six shoe sizes): whatever the student learns about "iphone 13" on half A is
about the same tokens it meets on half B. Real queries name models, devices, sizes and brands from a
long tail, so most of what decides a held-out query's relevance was never in the training half. A
cross-encoder can learn a rule that carries over ("the query's number must appear in the title"); a
bi-encoder has to place every value in its embedding, and a value it never saw stays where the base
encoder put it.

This world keeps attr's product types, result-page negatives and label noise, and draws the deciding
values from open spaces: a few hundred phones, laptops and tablets, numeric sizes, wattages and counts,
model codes made up per item, long tails of brands and colours. Each query has its own candidate items,
so a title is almost never judged for two queries (none at 6,000 pairs; as in a real judged set, where
queries retrieve different items). No category (many real catalogs have none), about half relevant, 12% of
labels flipped.

The truth is the world's rule (the query's product type and every constraint it names), whatever the title
shows, so there is more label noise than the flips. At ``WORLDS["open"]``'s 6,000 pairs, 466 of the 3,000
positives have a constraint value their title does not spell out (the seller left it out, or abbreviated a
colour), and 149 of the 1,636 near misses do not show the value that makes them miss. A typo (4% of queries)
can land in a model code, which then names another code while the truth stays the untypoed query's. A charger
"for iphone 13" is a near miss for "charger for iphone 13 plus" here, though it would fit in life.

**Simulated**: every title, keyphrase and label comes from this generator, not from people or a catalog.
Output columns as ``synth_labels.make_attribute_pairs``: ``title, category, keyphrase, label, truth, kind,
negative``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from keyphrase_pipeline.synthetic.synth import _ABBREV, _NOISE, TAXONOMY, _display, _made_up_brands, _typo

log = logging.getLogger(__name__)


def _phones() -> list[str]:
    out = [f"iphone {n}{s}" for n in range(6, 17) for s in ("", " plus", " pro", " pro max", " mini")]
    out += [f"iphone se {y}" for y in (2016, 2020, 2022)]
    out += [f"galaxy s{n}{s}" for n in range(8, 26) for s in ("", " plus", " ultra", " fe")]
    out += [f"galaxy a{n}{s}" for n in (10, 11, 12, 13, 14, 15, 16, 21, 22, 23, 24, 25, 32, 33, 34, 35, 51, 52, 53, 54, 55)
            for s in ("", " 5g")]
    out += [f"galaxy z {m} {n}" for m in ("flip", "fold") for n in range(3, 7)]
    out += [f"pixel {n}{s}" for n in range(3, 10) for s in ("", "a", " pro", " xl")]
    out += [f"moto g {m} {y}" for m in ("power", "stylus", "play", "pure") for y in range(2020, 2026)]
    out += [f"oneplus {n}{s}" for n in range(7, 14) for s in ("", "t", " pro")]
    return out


def _laptops() -> list[str]:
    out = [f"macbook {m} {s} inch {c}" for m in ("air", "pro") for s in (13, 14, 15, 16) for c in ("m1", "m2", "m3", "m4")]
    out += [f"dell xps {n}" for n in (13, 15, 17)] + [f"dell inspiron {n}" for n in (3511, 3520, 5410, 5515, 7420, 7620)]
    out += [f"thinkpad x1 carbon gen {n}" for n in range(6, 13)] + [f"thinkpad t14 gen {n}" for n in range(1, 6)]
    out += [f"hp envy x360 {n}" for n in (13, 14, 15)] + [f"hp pavilion {n}" for n in (14, 15, 16)]
    out += [f"surface pro {n}" for n in range(4, 12)] + [f"surface laptop {n}" for n in range(2, 8)]
    out += [f"asus zenbook {n}" for n in (13, 14, 15)] + [f"acer aspire {n}" for n in (3, 5, 7)]
    return out


def _tablets() -> list[str]:
    out = [f"ipad {n}th gen" for n in range(5, 11)] + [f"ipad air {n}" for n in range(2, 7)]
    out += [f"ipad pro {s} {y}" for s in ("11", "12.9") for y in (2018, 2020, 2021, 2022, 2024)]
    out += [f"ipad mini {n}" for n in range(4, 8)]
    out += [f"galaxy tab s{n}{s}" for n in range(6, 11) for s in ("", " lite", " fe", " plus", " ultra")]
    out += [f"galaxy tab a{n}" for n in (7, 8, 9)] + [f"fire hd {n} {y}" for n in (8, 10) for y in (2021, 2022, 2023)]
    out += [f"kindle paperwhite {n}" for n in (4, 5)] + [f"kindle {n}th gen" for n in (10, 11)]
    return out


_FRANCHISES = ["star wars", "marvel", "harry potter", "minecraft", "pokemon", "dc comics", "disney princess", "frozen",
               "jurassic world", "batman", "spider-man", "avengers", "transformers", "sonic", "super mario", "zelda",
               "paw patrol", "bluey", "barbie", "hot wheels", "ninjago", "creator", "technic", "city", "friends",
               "lord of the rings", "fortnite", "halo", "street fighter", "dragon ball", "naruto", "one piece"]
_CONNECTORS = ["usb c to usb c", "usb c to lightning", "usb a to usb c", "usb a to lightning", "micro usb", "usb c to hdmi",
               "magsafe", "usb c to micro usb", "usb a to micro usb", "3 in 1"]
_COLOURS = ["black", "white", "red", "blue", "green", "pink", "purple", "grey", "navy", "brown", "gold", "silver", "clear",
            "rose gold", "sage green", "olive", "burgundy", "teal", "mint", "lavender", "beige", "tan", "charcoal", "coral",
            "mustard", "cream", "ivory", "khaki", "maroon", "orange", "yellow", "turquoise", "lilac", "forest green",
            "sky blue", "royal blue", "hot pink", "midnight blue", "space grey", "graphite", "camo", "leopard"]


def _num(fmt: str, values) -> list[str]:
    return [fmt.format(v) for v in values]


# The open value space of each (product type, slot); a slot absent here keeps attr's list (TAXONOMY). "phones",
# "laptops", "tablets" name the device lists; materials stay the taxonomy's (a short, closed vocabulary in real data).
_WATTS = (5, 10, 12, 15, 18, 20, 25, 30, 35, 40, 45, 60, 65, 67, 100, 120, 140)
_SIZES: dict[str, list[str]] = {
    "phone charger": _num("{}w", _WATTS),
    "charging cable": _num("{}ft", (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25)),
    "running shoes": _num("size {:g}", np.arange(4, 15.5, 0.5)),
    "t-shirt": ["xs", "s", "m", "l", "xl", "xxl", "3xl", "4xl", "5xl", "youth s", "youth m", "youth l"],
    "hoodie": ["xs", "s", "m", "l", "xl", "xxl", "3xl", "4xl", "youth m", "youth l"],
    "socks": ["s", "m", "l", "xl", "kids", "shoe size 6-12", "shoe size 12-16"],
    "coffee maker": _num("{} cup", (1, 2, 4, 5, 8, 10, 12, 14)),
    "bed sheets": ["twin", "twin xl", "full", "queen", "king", "california king", "split king", "full xl"],
    "throw pillow": _num("{0}x{0}", range(12, 28, 2)) + ["12x20", "14x36", "16x24"],
    "garden hose": _num("{}ft", (10, 15, 25, 50, 75, 100, 150)),
    "led bulb": ["a19", "a21", "br30", "br40", "e12", "e26", "gu10", "par38", "par30", "t8", "g25", "b11"],
    "laptop charger": _num("{}w", (30, 45, 60, 65, 90, 96, 100, 135, 140, 230)),
    "mechanical keyboard": ["60%", "65%", "75%", "tkl", "full size", "96%", "40%"],
    "laptop sleeve": _num("{} inch", ("10", "11", "11.6", "12", "13", "13.3", "14", "15", "15.6", "16", "17")),
    "usb flash drive": ["8gb", "16gb", "32gb", "64gb", "128gb", "256gb", "512gb", "1tb", "2tb"],
    "yoga mat": _num("{}mm", (3, 4, 5, 6, 8, 10, 12, 15)),
    "dumbbells": _num("{:g} lb", (1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 52.5, 60, 70, 75, 90)),
    "water bottle": _num("{} oz", (12, 14, 16, 18, 20, 21, 24, 26, 30, 32, 36, 40, 50, 64, 128)),
    "action figure": _num("{} inch", ("3.75", "4", "6", "7", "12")),
    "rc car": _num("1/{} scale", (8, 10, 12, 14, 16, 18, 24, 28)),
}
_COMPAT: dict[str, str | list[str]] = {
    "phone case": "phones", "screen protector": "phones", "phone charger": "phones", "charging cable": "connectors",
    "tablet case": "tablets", "laptop charger": "laptops", "laptop sleeve": "laptops",
    "building blocks": "franchises", "action figure": "franchises",
}
_COUNTS = _num("{} pack", (2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 20, 24, 30, 36, 48, 50, 100))
_PIECES = _num("{} pieces", (100, 250, 300, 500, 750, 1000, 1500, 2000, 3000, 5000))
_SERIES = ["pro", "max", "elite", "sport", "air", "ultra", "go", "flex", "lite", "neo", "plus", "mini", "core", "edge"]
_LETTERS = "abcdefghjkmnprstvwxz"
# How often a query constrains each slot (when its type has the slot), before the number of constraints is drawn.
_SLOT_WEIGHT = {"brand": 1.0, "model": 0.6, "colour": 0.8, "size": 1.0, "material": 0.4, "compat": 1.6, "count": 0.5}
OPEN_SLOTS: tuple[str, ...] = tuple(_SLOT_WEIGHT)


class OpenSpace:
    """The value lists of the open world, per product type: ``values(ptype, slot)`` (list of str, canonical
    lowercase; ``model`` codes are drawn per item instead, by ``model_code``)."""

    def __init__(self):
        lists = {"phones": _phones(), "laptops": _laptops(), "tablets": _tablets(), "franchises": _FRANCHISES,
                 "connectors": _CONNECTORS}
        self.types = [t for t in TAXONOMY]
        self.names = {t["type"]: [t["type"], *t["syn"]] for t in TAXONOMY}
        self._v: dict[tuple[str, str], list[str]] = {}
        for t in TAXONOMY:
            p, slots = t["type"], t["slots"]
            self._v[(p, "brand")] = list(t["brands"]) + _made_up_brands(p, 60)
            self._v[(p, "colour")] = _COLOURS if "colour" in slots else []
            self._v[(p, "material")] = list(slots.get("material", []))
            self._v[(p, "size")] = _SIZES.get(p, list(slots.get("size", [])))
            self._v[(p, "compat")] = lists[_COMPAT[p]] if p in _COMPAT else list(slots.get("compat", []))
            self._v[(p, "count")] = (_PIECES if any("pieces" in c for c in slots.get("count", [])) else _COUNTS) \
                if "count" in slots else []

    def values(self, ptype: str, slot: str) -> list[str]:
        return self._v.get((ptype, slot), [])

    def slots(self, ptype: str) -> list[str]:
        """The slots a type has: every type has brand and model; the rest as its value lists."""
        return ["brand", "model"] + [s for s in ("colour", "size", "material", "compat", "count") if self._v[(ptype, s)]]


def model_code(rng: np.random.Generator) -> str:
    """A made-up model code in one of three shapes: "kx-4521", "a2633", "flex 350" (canonical lowercase)."""
    shape = int(rng.integers(3))
    if shape == 0:
        return "".join(rng.choice(list(_LETTERS), 2)) + "-" + str(int(rng.integers(100, 10_000)))
    if shape == 1:
        return str(rng.choice(list(_LETTERS))) + str(int(rng.integers(1000, 10_000)))
    return f"{rng.choice(_SERIES)} {int(rng.integers(2, 100)) * 10}"


def _near(value: str, pool: list[str], rng: np.random.Generator) -> str:
    """Another value close to ``value``: a model code with one digit changed, else a list neighbour (the next
    phone, size or wattage) or, half the time, any other value of the list."""
    digits = [i for i, ch in enumerate(value) if ch.isdigit()]
    if not pool and digits:  # a model code
        i = digits[int(rng.integers(len(digits)))]
        d = str((int(value[i]) + int(rng.integers(1, 10))) % 10)
        return value[:i] + d + value[i + 1:]
    others = [v for v in pool if v != value]
    if not others:
        return value
    if value in pool and rng.random() < 0.5:
        j = pool.index(value) + (1 if rng.random() < 0.5 else -1)
        if 0 <= j < len(pool):
            return pool[j]
    return str(others[int(rng.integers(len(others)))])


def _zipf_pick(pool: list[str], rng: np.random.Generator, order: np.ndarray, a: float = 0.6) -> str:
    """A value of ``pool`` drawn with weights 1/rank^a over a per-world shuffled ``order`` (a head and a tail)."""
    w = 1.0 / np.arange(1, len(pool) + 1) ** a
    return str(pool[order[int(rng.choice(len(pool), p=w / w.sum()))]])


def _render(item: dict, name: str, rng: np.random.Generator) -> str:
    """A seller-style title of an item: brand, model code, attribute values with their lead words, the product
    name, sometimes a word of seller noise; order and casing vary as ``synth._item_title_segments``'s do."""
    style = rng.random()
    chunks: list[str] = []
    if item.get("compat"):
        c = _display(item["compat"], style)
        chunks.append([f"for {c}", c, f"Fits {c}", f"Compatible with {c}"][int(rng.integers(4))])
    if item.get("colour") and rng.random() < 0.9:
        chunks.append(_display(_ABBREV.get(item["colour"], item["colour"]) if rng.random() < 0.2 else item["colour"], style))
    if item.get("material") and rng.random() < 0.85:
        chunks.append(_display(item["material"], style))
    if item.get("size") and rng.random() < 0.92:
        chunks.append(_display(item["size"], style))
    if item.get("count"):
        chunks.append(_display(item["count"], style))
    rng.shuffle(chunks)
    head = [_display(item["brand"], style)] if item.get("brand") and rng.random() < 0.92 else []
    if item.get("model") and rng.random() < 0.9:
        head.append(item["model"].upper() if rng.random() < 0.7 else item["model"])
    cut = int(rng.integers(len(chunks) + 1))
    words = head + chunks[:cut] + [_display(name, style)] + chunks[cut:]
    if rng.random() < 0.4:
        words = [_NOISE[int(rng.integers(len(_NOISE)))]] + words if rng.random() < 0.5 else words + [_NOISE[int(rng.integers(len(_NOISE)))]]
    text = " ".join(words)
    return text.upper() if style > 0.93 else text


def _query_text(ptype_word: str, c: dict) -> str:
    """Buyer-style query text: brand, model, colour, material and size before the type word; "for" the device and
    the count after (canonical lowercase)."""
    pre = [c[s] for s in ("brand", "model", "colour", "material") if c.get(s)]
    size = c.get("size")
    if size:
        pre.append(f"size {size}" if size in ("xs", "s", "m", "l", "xl", "xxl") else size)
    post = [f"for {c['compat']}"] if c.get("compat") else []
    if c.get("count"):
        post.append(c["count"])
    return " ".join(pre + [ptype_word] + post)


def make_open_pairs(seed: int, n_pairs: int = 10_000, noise: float = 0.12, per_keyphrase: int = 6,
                    positive_share: float = 0.5, near_share: float = 0.55, lexical_share: float = 0.2,
                    typo_share: float = 0.04, details: bool = False) -> pd.DataFrame:
    """``n_pairs`` judged pairs of attribute queries over open value spaces (module docstring).

    Each query is a product type with 1-3 constraints (brand, model code, colour, size, material, device or
    theme, count; a model code always comes with its brand), values drawn with a head and a long tail. Its
    ``per_keyphrase`` candidates are made for it: positives (every constraint met, the other attributes drawn),
    near misses (one constraint changed to a close value: the next phone, the next size, one digit of a model
    code), lexical neighbours (another product type that shares the query's device, theme or brand) and random
    items of any type.

    Args:
        seed: the world's seed; the same arguments give the same frame.
        n_pairs: pairs wanted (exactly that many are returned).
        noise: share of labels flipped, in [0, 0.5).
        per_keyphrase: candidates judged per query.
        positive_share, near_share, lexical_share: expected shares of a query's candidates that are positives, and
            of its negatives that are near misses and lexical neighbours (the rest are random).
        typo_share: share of queries with one typo (kind ``misspelled``; relevance is the untypoed query's).
        details: also return the hidden attributes: ``query_type``, ``constraints`` (dict slot -> value),
            ``item_type`` and ``item`` (dict slot -> value or None), for tests.

    Returns:
        DataFrame ``title, category`` (empty), ``keyphrase`` (str), ``label, truth`` (int8 0/1), ``kind``
        (``misspelled`` for a typoed query, else ``model`` when it names a model code, else ``compat`` when it names
        a device or theme, else ``brand`` when it names a brand, else ``attr``), ``negative``
        (``positive``, ``near_miss``, ``lexical``, ``random``).

    Raises:
        ValueError: a noise outside [0, 0.5), fewer than 2 pairs, or shares outside [0, 1].
    """
    if not 0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), got {noise}")
    if n_pairs < 2:
        raise ValueError(f"n_pairs must be >= 2, got {n_pairs}")
    if not all(0 <= x <= 1 for x in (positive_share, near_share, lexical_share)) or near_share + lexical_share > 1:
        raise ValueError("positive_share, near_share and lexical_share must be in [0, 1], near + lexical <= 1")
    rng = np.random.default_rng([seed, 81])
    space = OpenSpace()
    types = [t["type"] for t in space.types]
    type_w = np.array([t["w"] for t in space.types]) ** 0.6
    orders = {}  # per (type, slot): a shuffled order, so that each world has its own head values

    def pick(ptype: str, slot: str) -> str:
        if slot == "model":
            return model_code(rng)
        pool = space.values(ptype, slot)
        if (ptype, slot) not in orders:
            orders[(ptype, slot)] = rng.permutation(len(pool))
        return _zipf_pick(pool, rng, orders[(ptype, slot)])

    def item_of(ptype: str, fixed: dict) -> dict:
        it = {"type": ptype}
        for s in space.slots(ptype):
            if s in fixed:
                it[s] = fixed[s]
            elif s == "brand" and rng.random() < 0.1:
                it[s] = None  # unbranded
            elif s in ("count", "material") and rng.random() < 0.5:
                it[s] = None  # a single, or the seller did not say
            else:
                it[s] = pick(ptype, s)
        return it

    def relevant(it: dict, ptype: str, cons: dict) -> bool:
        return it["type"] == ptype and all(it.get(s) == v for s, v in cons.items())

    rows: list[dict] = []
    seen: set[str] = set()
    slot_names = list(_SLOT_WEIGHT)
    while len(rows) < n_pairs:
        ptype = types[int(rng.choice(len(types), p=type_w / type_w.sum()))]
        avail = space.slots(ptype)
        w = np.array([_SLOT_WEIGHT[s] for s in avail])
        k = min(len(avail), int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2])))
        chosen = set(rng.choice(avail, size=k, replace=False, p=w / w.sum()).tolist())
        if "model" in chosen:
            chosen.add("brand")
        cons = {s: pick(ptype, s) for s in slot_names if s in chosen}
        word = space.names[ptype][int(rng.integers(len(space.names[ptype])))]
        text = _query_text(word, cons)
        kind = "model" if "model" in cons else "compat" if "compat" in cons else "brand" if "brand" in cons else "attr"
        if rng.random() < typo_share:
            text, kind = _typo(text, rng), "misspelled"
        if text in seen:
            continue
        seen.add(text)
        n_pos = int(rng.binomial(per_keyphrase, positive_share))
        n_neg = per_keyphrase - n_pos
        n_near = int(rng.binomial(n_neg, near_share))
        n_lex = int(rng.binomial(n_neg - n_near, lexical_share / max(1e-9, 1 - near_share)))
        cands: list[tuple[dict, str, str]] = []
        for _ in range(n_pos):
            cands.append((item_of(ptype, cons), ptype, "positive"))
        for _ in range(n_near):
            slot = str(rng.choice(sorted(cons)))
            changed = dict(cons)
            changed[slot] = _near(cons[slot], space.values(ptype, slot) if slot != "model" else [], rng)
            if slot == "brand" and "model" in cons:
                changed["model"] = _near(cons["model"], [], rng)  # another brand's line has another code
            cands.append((item_of(ptype, changed), ptype, "near_miss"))
        shared = {s: cons[s] for s in ("compat", "brand") if s in cons}
        lex_types = [t for t in types if t != ptype and any(v in space.values(t, s) or s == "brand"
                                                             for s, v in shared.items())]
        for _ in range(n_lex if lex_types else 0):
            other = lex_types[int(rng.integers(len(lex_types)))]
            keep = {s: v for s, v in shared.items() if v in space.values(other, s) or s == "brand"}
            cands.append((item_of(other, keep), other, "lexical"))
        while len(cands) < per_keyphrase:
            other = types[int(rng.integers(len(types)))]
            cands.append((item_of(other, {}), other, "random"))
        for it, itype, what in cands:
            names = space.names[itype]
            title = _render(it, names[int(rng.integers(len(names)))], rng)
            rows.append({"title": title, "keyphrase": text, "truth": int(relevant(it, ptype, cons)), "kind": kind,
                         "negative": what, "query_type": ptype, "constraints": cons, "item_type": itype, "item": it})
    out = pd.DataFrame(rows[:n_pairs])
    flip = rng.random(len(out)) < noise
    out.insert(1, "category", "")
    out.insert(3, "label", (out["truth"].to_numpy() ^ flip).astype("int8"))
    out["truth"] = out["truth"].astype("int8")
    hidden = ["query_type", "constraints", "item_type", "item"] if details else []
    out = out[["title", "category", "keyphrase", "label", "truth", "kind", "negative", *hidden]]
    log.info("judged pairs (simulated, open vocabulary): %d pairs, %d keyphrases, %.1f%% relevant, %.1f%% labels "
             "flipped, negatives %s", len(out), out["keyphrase"].nunique(), 100 * out["label"].mean(),
             100 * flip.mean(), out["negative"].value_counts().to_dict())
    return out
