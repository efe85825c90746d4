"""Generate a synthetic marketplace: catalog, keyphrases, biased search logs, SR verdicts, hidden truth.

The world is a stand-in for a real platform's inputs so the whole pipeline can run, be tested and be
evaluated against truth. Everything under ``raw/`` looks like what a platform provides (contracts
``catalog``, ``keyphrases``, ``events``, ``sr_input``); everything under ``synth/`` is the hidden truth
(item attributes, keyphrase constraints, parameters), read only by evaluation and the simulated judge.

Same seed -> identical data. A rerun replaces the world (partitions outside the new day range are
removed). See docs/SYNTHETIC.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import arrow_schema
from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import Lake, _fs, atomic_dir, parse_ds, write_parquet_atomic
from keyphrase_pipeline.synthetic.world import SLOTS, Truth, hash_normal, hash_u01, stable_seed

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Scales: items, keyphrases, searches per day
SCALES: dict[str, tuple[int, int, int]] = {
    "tiny": (400, 600, 2_000),
    "demo": (3_000, 3_000, 20_000),
    "small": (100_000, 50_000, 200_000),
    "large": (10_000_000, 1_000_000, 1_000_000),
}

# Simulation parameters (recorded in synth/world.json).
PARAMS = {
    "share_listed_day1": 0.85,
    "revise_rate_per_day": 0.01,
    "deactivate_rate_per_day": 0.002,
    "popularity_lognormal_sigma": 1.8,
    "retrieval_pop_weight": 2.0,        # ranking score = w*log(popularity) + g*match + Gumbel
    "retrieval_match_weight": 3.0,
    "retrieval_first_stage": 200,       # candidates per query kept by static score (big pools only)
    "retrieval_depth": 40,              # candidates the SR filter looks at per search
    "retrieval_pool_share": 0.4,        # share of a type's items the engine retrieves per day (by popularity)
    "retrieval_pool_max": 4000,         # at most this many items of a type per day
    "shown_min": 8,
    "shown_max": 10,
    "sr_threshold": 0.5,
    "sr_noise": 0.16,
    "ctr_relevant": 0.20,
    "ctr_irrelevant": 0.015,
    "position_bias_exponent": 0.8,
    "item_quality_sigma": 0.3,
    # the click process beyond relevance and position (issue 30): what a CTR model can learn from the text, the
    # popularity and an image; each a multiplier on P(click) (the item-level ones normalised to mean 1 over items)
    "ctr_partial_match": 0.03,          # + this x (share of the keyphrase's constraints the item meets), irrelevant pairs
    "ctr_popularity_exponent": 0.2,     # x popularity ** this (popular items: trusted, cheaper, better reviewed)
    "brand_ctr_sigma": 0.35,            # x exp(N(0, this)) per (product type, brand): a brand's pull, read from titles
    "image_appeal_sigma": 0.35,         # x exp(N(0, this)) per item: a photo's appeal, seen only in raw/item_images
    "image_dim": 16,                    # raw/item_images vectors: appeal on one hidden direction + N(0, image_noise)
    "image_noise": 0.5,
    "query_zipf_exponent": 1.05,
    "misspelled_share": 0.08,
}

ITEM_ID_BASE = 1_000_000
KEYPHRASE_ID_BASE = 50_000_000
ITEM_BLOCK = 500_000

# ---------------------------------------------------------------------------------------------
# Taxonomy: (top category, leaf category, product type, synonyms, brands, weight, slots)
# slot values are canonical lowercase (what buyers type); titles render them in seller style.
COLOURS = ["black", "white", "red", "blue", "green", "pink", "purple", "grey", "navy", "brown", "gold", "silver", "clear"]
PHONES = ["iphone 12", "iphone 13", "iphone 14", "iphone 15", "iphone 15 pro max", "galaxy s22", "galaxy s23",
          "galaxy s24", "pixel 7", "pixel 8"]
LAPTOPS = ["macbook air", "macbook pro", "dell xps", "hp pavilion", "lenovo thinkpad", "surface pro"]
TABLETS = ["ipad air", "ipad pro 11", "ipad mini", "galaxy tab s8", "kindle paperwhite"]
APPAREL = ["xs", "s", "m", "l", "xl", "xxl"]
SHOE = ["size 7", "size 8", "size 9", "size 10", "size 11", "size 12"]

TAXONOMY: list[dict] = [
    dict(top="Cell Phones & Accessories", leaf="Cases, Covers & Skins", type="phone case", syn=["phone cover", "phone shell"],
         brands=["otterbox", "spigen", "casetify", "esr", "speck", "caseology"], w=9.0,
         slots=dict(colour=COLOURS, material=["silicone", "leather", "tpu", "hard plastic"], compat=PHONES)),
    dict(top="Cell Phones & Accessories", leaf="Screen Protectors", type="screen protector", syn=["screen guard"],
         brands=["zagg", "amfilm", "spigen", "belkin"], w=5.0,
         slots=dict(material=["tempered glass", "film"], compat=PHONES, count=["2 pack", "3 pack"])),
    dict(top="Cell Phones & Accessories", leaf="Chargers & Cradles", type="phone charger", syn=["charging block"],
         brands=["anker", "belkin", "apple", "samsung", "ugreen"], w=4.0,
         slots=dict(colour=["black", "white"], size=["20w", "30w", "45w", "65w"], compat=["iphone", "galaxy", "pixel"])),
    dict(top="Cell Phones & Accessories", leaf="Cables & Adapters", type="charging cable", syn=["charger cord"],
         brands=["anker", "belkin", "apple", "amazon basics", "ugreen"], w=4.0,
         slots=dict(colour=["black", "white", "red", "blue"], size=["3ft", "6ft", "10ft"], compat=["usb c", "lightning", "micro usb"],
                    count=["2 pack", "3 pack", "5 pack"])),
    dict(top="Cell Phones & Accessories", leaf="Headphones", type="wireless earbuds", syn=["bluetooth earbuds"],
         brands=["apple", "sony", "jbl", "samsung", "beats", "soundcore"], w=5.0,
         slots=dict(colour=["black", "white", "blue", "pink"])),
    dict(top="Clothing, Shoes & Accessories", leaf="Athletic Shoes", type="running shoes", syn=["sneakers"],
         brands=["nike", "adidas", "new balance", "asics", "brooks", "hoka"], w=6.0,
         slots=dict(colour=["black", "white", "red", "blue", "grey", "navy", "pink"], size=SHOE)),
    dict(top="Clothing, Shoes & Accessories", leaf="T-Shirts", type="t-shirt", syn=["tee shirt", "tee"],
         brands=["hanes", "gildan", "nike", "champion", "carhartt"], w=5.0,
         slots=dict(colour=COLOURS[:10], size=APPAREL, material=["cotton", "polyester"], count=["3 pack", "6 pack"])),
    dict(top="Clothing, Shoes & Accessories", leaf="Hoodies & Sweatshirts", type="hoodie", syn=["hooded sweatshirt"],
         brands=["champion", "nike", "carhartt", "the north face", "adidas"], w=4.0,
         slots=dict(colour=COLOURS[:10], size=APPAREL, material=["fleece", "cotton"])),
    dict(top="Clothing, Shoes & Accessories", leaf="Backpacks", type="backpack", syn=["rucksack"],
         brands=["jansport", "the north face", "herschel", "osprey"], w=3.0,
         slots=dict(colour=["black", "grey", "navy", "green", "red"], material=["nylon", "canvas", "leather"])),
    dict(top="Clothing, Shoes & Accessories", leaf="Socks", type="socks", syn=[],
         brands=["hanes", "nike", "darn tough", "bombas"], w=2.5,
         slots=dict(colour=["black", "white", "grey"], size=["m", "l", "xl"], material=["cotton", "wool"], count=["6 pack", "12 pack"])),
    dict(top="Home & Garden", leaf="Coffee Makers", type="coffee maker", syn=["coffee machine"],
         brands=["keurig", "cuisinart", "mr. coffee", "hamilton beach", "ninja"], w=3.0,
         slots=dict(colour=["black", "white", "red", "silver"], size=["4 cup", "12 cup", "single serve"])),
    dict(top="Home & Garden", leaf="Sheets & Pillowcases", type="bed sheets", syn=["sheet set"],
         brands=["mellanni", "brooklinen", "utopia bedding"], w=3.5,
         slots=dict(colour=["white", "grey", "navy", "blue", "pink"], size=["twin", "full", "queen", "king"],
                    material=["cotton", "microfiber", "linen", "bamboo"])),
    dict(top="Home & Garden", leaf="Decorative Pillows", type="throw pillow", syn=["pillow cover", "cushion cover"],
         brands=["pottery barn", "mainstays"], w=2.5,
         slots=dict(colour=COLOURS[:10], size=["18x18", "20x20"], material=["velvet", "linen"], count=["2 pack", "4 pack"])),
    dict(top="Home & Garden", leaf="Garden Hoses", type="garden hose", syn=["water hose"],
         brands=["flexzilla", "gardena", "craftsman"], w=2.0,
         slots=dict(colour=["green", "black", "blue"], size=["25ft", "50ft", "100ft"])),
    dict(top="Home & Garden", leaf="Light Bulbs", type="led bulb", syn=["led light bulb"],
         brands=["philips", "ge", "sylvania", "cree"], w=2.5,
         slots=dict(size=["a19", "br30", "e12"], colour=["warm white", "daylight"], count=["4 pack", "8 pack", "12 pack"])),
    dict(top="Computers/Tablets & Networking", leaf="Laptop Power Adapters/Chargers", type="laptop charger", syn=["laptop power adapter"],
         brands=["apple", "dell", "hp", "lenovo", "anker"], w=3.0,
         slots=dict(size=["45w", "65w", "90w"], compat=LAPTOPS)),
    dict(top="Computers/Tablets & Networking", leaf="Mice, Trackballs & Touchpads", type="wireless mouse", syn=["cordless mouse"],
         brands=["logitech", "microsoft", "razer", "apple"], w=3.0,
         slots=dict(colour=["black", "white", "grey", "pink"])),
    dict(top="Computers/Tablets & Networking", leaf="Keyboards & Keypads", type="mechanical keyboard", syn=["gaming keyboard"],
         brands=["logitech", "razer", "corsair", "keychron"], w=2.5,
         slots=dict(colour=["black", "white", "pink"], size=["60%", "tkl", "full size"])),
    dict(top="Computers/Tablets & Networking", leaf="Laptop Cases & Bags", type="laptop sleeve", syn=["laptop case"],
         brands=["incase", "tomtoc", "amazon basics"], w=2.0,
         slots=dict(colour=["black", "grey", "navy", "pink"], size=["13 inch", "14 inch", "15 inch", "16 inch"], compat=LAPTOPS[:3])),
    dict(top="Computers/Tablets & Networking", leaf="USB Flash Drives", type="usb flash drive", syn=["thumb drive"],
         brands=["sandisk", "samsung", "kingston", "pny"], w=2.5,
         slots=dict(size=["32gb", "64gb", "128gb", "256gb"], count=["2 pack", "5 pack"])),
    dict(top="Computers/Tablets & Networking", leaf="iPad/Tablet/eBook Cases", type="tablet case", syn=["tablet cover"],
         brands=["otterbox", "esr", "moko", "procase"], w=2.5,
         slots=dict(colour=["black", "blue", "pink", "grey"], material=["leather", "silicone"], compat=TABLETS)),
    dict(top="Sporting Goods", leaf="Yoga Mats", type="yoga mat", syn=["exercise mat"],
         brands=["gaiam", "manduka", "lululemon", "amazon basics"], w=2.5,
         slots=dict(colour=["black", "purple", "blue", "pink", "green", "grey"], size=["4mm", "6mm", "10mm"],
                    material=["tpe", "pvc", "cork"])),
    dict(top="Sporting Goods", leaf="Dumbbells", type="dumbbells", syn=["hand weights"],
         brands=["bowflex", "cap barbell", "amazon basics"], w=2.0,
         slots=dict(size=["5 lb", "10 lb", "15 lb", "25 lb"], material=["neoprene", "cast iron"], count=["pair"])),
    dict(top="Sporting Goods", leaf="Water Bottles & Hydration", type="water bottle", syn=["insulated bottle"],
         brands=["hydro flask", "yeti", "stanley", "nalgene", "owala"], w=4.0,
         slots=dict(colour=COLOURS[:12], size=["20 oz", "32 oz", "40 oz"], material=["stainless steel", "plastic"])),
    dict(top="Sporting Goods", leaf="Golf Balls", type="golf balls", syn=[],
         brands=["titleist", "callaway", "taylormade", "srixon"], w=2.0,
         slots=dict(colour=["white", "yellow"], count=["12 pack", "24 pack"])),
    dict(top="Toys & Hobbies", leaf="Building Toys", type="building blocks", syn=["building set"],
         brands=["lego", "mega bloks"], w=3.0,
         slots=dict(compat=["star wars", "city", "technic", "harry potter"], count=["500 pieces", "1000 pieces"])),
    dict(top="Toys & Hobbies", leaf="Action Figures", type="action figure", syn=["figurine"],
         brands=["hasbro", "mattel", "funko", "mcfarlane"], w=2.5,
         slots=dict(compat=["marvel", "star wars", "dc comics", "pokemon"], size=["6 inch", "12 inch"])),
    dict(top="Toys & Hobbies", leaf="Jigsaw Puzzles", type="jigsaw puzzle", syn=["puzzle"],
         brands=["ravensburger", "buffalo games"], w=1.5,
         slots=dict(count=["500 pieces", "1000 pieces", "2000 pieces"])),
    dict(top="Toys & Hobbies", leaf="RC Cars, Trucks & Motorcycles", type="rc car", syn=["remote control car"],
         brands=["traxxas", "redcat", "arrma"], w=1.5,
         slots=dict(colour=["red", "blue", "black"], size=["1/10 scale", "1/16 scale"])),
]

# Seller-style renderings of canonical tokens.
_DISPLAY = {
    "iphone": "iPhone", "ipad": "iPad", "macbook": "MacBook", "xps": "XPS", "hp": "HP", "usb": "USB",
    "tpu": "TPU", "ge": "GE", "led": "LED", "pvc": "PVC", "tpe": "TPE", "dc": "DC", "rc": "RC", "jbl": "JBL",
    "esr": "ESR", "pny": "PNY", "zagg": "ZAGG", "tkl": "TKL", "xs": "XS", "xl": "XL", "xxl": "XXL",
    "s": "S", "m": "M", "l": "L", "lego": "LEGO", "yeti": "YETI", "t-shirt": "T-Shirt", "amfilm": "amFilm", "ugreen": "UGREEN",
}
_ABBREV = {"black": "Blk", "white": "Wht", "grey": "Gry", "navy": "Nvy", "silver": "Slvr", "pieces": "pcs",
           "inch": "in", "pack": "pk", "stainless steel": "SS", "tempered glass": "Tempered Glass 9H",
           "wireless": "Wireless", "protector": "Protector"}
_NOISE = ["NEW", "New", "Brand New", "NWT", "Fast Ship", "FAST SHIPPING", "Free Shipping", "Genuine", "OEM",
          "US Seller", "Premium", "2026", "Authentic", "Sealed", "Hot Sale", "L@@K", "Top Quality", "Gift"]


def _display(text: str, style: float) -> str:
    words = []
    for w in text.split():
        words.append(_DISPLAY.get(w, w.capitalize() if style < 0.85 else w.upper()))
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
def resolve_scale(scale: str | int) -> tuple[str, int, int, int]:
    """(name, n_items, n_keyphrases, searches_per_day) for a scale name or an item count.

    Raises ConfigError (exit 2) for a name not in ``SCALES`` that is not a number, or fewer than 50 items."""
    s = str(scale).strip().lower()
    if s in SCALES:
        return (s, *SCALES[s])
    try:
        n = int(float(s.replace("_", "")))
    except ValueError:
        raise ConfigError(f"synth scale must be one of {sorted(SCALES)} or a number of items, got {scale!r}") from None
    if n < 50:
        raise ConfigError(f"synth scale needs at least 50 items, got {n}")
    # interpolate keyphrases and searches/day between the named scales (log-log), proportional outside
    pts = sorted(SCALES.values())
    x = np.log([p[0] for p in pts])
    n_kp = float(np.exp(np.interp(np.log(n), x, np.log([p[1] for p in pts]))))
    searches = float(np.exp(np.interp(np.log(n), x, np.log([p[2] for p in pts]))))
    if n < pts[0][0]:
        n_kp, searches = n_kp * n / pts[0][0], searches * n / pts[0][0]
    elif n > pts[-1][0]:
        n_kp, searches = n_kp * n / pts[-1][0], searches * n / pts[-1][0]
    return (str(n), n, max(100, int(round(n_kp))), max(500, int(round(searches))))


# ---------------------------------------------------------------------------------------------
_SYL_A = ["ka", "lo", "vi", "ze", "mo", "ta", "ri", "no", "su", "be", "xa", "do", "fe", "gu", "pa", "qi", "ro", "wy"]
_SYL_B = ["lex", "ron", "vo", "tek", "mix", "na", "zu", "ly", "qo", "rix", "dor", "fit", "gen", "hub", "ion", "kin"]


def _made_up_brands(ptype: str, n: int) -> list[str]:
    """Deterministic small-seller brand names for a product type (e.g. "kalex", "zetekmo")."""
    r = np.random.default_rng(stable_seed("brands", ptype))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        name = _SYL_A[r.integers(len(_SYL_A))] + _SYL_B[r.integers(len(_SYL_B))]
        if r.random() < 0.5:
            name += _SYL_A[r.integers(len(_SYL_A))]
        if r.random() < 0.3:
            name += _SYL_B[r.integers(len(_SYL_B))]
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def taxonomy_for(n_items: int) -> list[dict]:
    """The product types a world of this size uses: small worlds keep fewer types so that each type
    still has enough items to compete for exposure (tiny: 12 types in 6 top categories)."""
    if n_items >= 20_000:   # big worlds: long tails of small brands, so items and queries stay diverse
        extra = int(np.sqrt(n_items) / 8)
        return [{**t, "brands": t["brands"] + _made_up_brands(t["type"], extra)} for t in TAXONOMY]
    if n_items >= 2_000:
        return TAXONOMY
    keep = {"phone case", "screen protector", "charging cable", "wireless earbuds", "running shoes", "t-shirt",
            "coffee maker", "bed sheets", "wireless mouse", "laptop charger", "water bottle", "building blocks"}
    return [t for t in TAXONOMY if t["type"] in keep]


def _gen_items(n: int, seed: int, taxonomy: list[dict]) -> pd.DataFrame:
    """Item attributes (the truth), vectorised per product type."""
    rng = np.random.default_rng([seed, 11])
    w = np.array([t["w"] for t in taxonomy])
    ptype = rng.choice(len(taxonomy), size=n, p=w / w.sum())
    cols: dict[str, np.ndarray] = {s: np.full(n, None, dtype=object) for s in SLOTS}
    for ti, spec in enumerate(taxonomy):
        idx = np.flatnonzero(ptype == ti)
        if not len(idx):
            continue
        brands = spec["brands"]
        bw = 1.0 / np.arange(1, len(brands) + 1) ** 0.7
        b = np.array(brands, dtype=object)[rng.choice(len(brands), size=len(idx), p=bw / bw.sum())]
        unbranded = rng.random(len(idx)) < 0.12
        b[unbranded] = None
        cols["brand"][idx] = b
        for slot, values in spec["slots"].items():
            vw = 1.0 / np.arange(1, len(values) + 1) ** 0.5
            v = np.array(values, dtype=object)[rng.choice(len(values), size=len(idx), p=vw / vw.sum())]
            if slot == "count":
                v[rng.random(len(idx)) < 0.6] = None      # most items are singles
            elif slot == "material":
                v[rng.random(len(idx)) < 0.15] = None     # seller did not say
            cols[slot][idx] = v
    pop = rng.lognormal(0.0, PARAMS["popularity_lognormal_sigma"], size=n)
    df = pd.DataFrame({
        "item_id": ITEM_ID_BASE + np.arange(n, dtype=np.int64),
        "top_category": np.array([t["top"] for t in taxonomy], dtype=object)[ptype],
        "category": np.array([t["leaf"] for t in taxonomy], dtype=object)[ptype],
        "product_type": np.array([t["type"] for t in taxonomy], dtype=object)[ptype],
        **{s: cols[s] for s in SLOTS},
        "popularity": pop / pop.mean(),
    })
    return df[["item_id", "top_category", "category", "product_type", "brand", "colour", "size",
               "material", "compat", "count", "popularity"]]


def _item_title_segments(row: tuple, u: np.ndarray) -> list[str]:
    """One seller-style title from attributes and 16 uniforms (deterministic per item and version), as its
    segments: a value never spans two of them ("2 Pack", "for Galaxy S21" stay whole)."""
    ptype, brand, colour, size, material, compat, count = row
    spec = _TYPE_SPEC[ptype]
    names = [spec["type"], *spec["syn"]]
    core = names[int(u[0] * len(names)) % len(names)]
    style = u[1]
    parts: list[str] = []
    if brand is not None and u[2] < 0.92:
        parts.append(_display(brand, style))
    elif brand is None and u[2] < 0.3:
        parts.append("Unbranded")
    chunks: list[str] = []
    if compat is not None:
        cdisp = _display(compat, style)
        chunks.append(["for " + cdisp, cdisp, "Fits " + cdisp, "Compatible with " + cdisp][int(u[3] * 4)])
    if colour is not None and u[4] < 0.9:
        c = _display(colour, style)
        if u[5] < 0.2 and colour in _ABBREV:
            c = _ABBREV[colour]
        chunks.append(c)
    if material is not None and u[6] < 0.85:
        chunks.append(_display(_ABBREV.get(material, material) if u[7] < 0.3 else material, style))
    if size is not None and u[8] < 0.92:
        s = _display(size, style)
        if u[9] < 0.25:
            s = s.replace("Inch", "in").replace("inch", "in")
        chunks.append(("Size " + s) if size in APPAREL else s)
    if count is not None:
        c = _display(count, style)
        if u[10] < 0.3:
            c = c.replace("Pack", "pk").replace("Pieces", "pcs")
        chunks.append(c)
    core_d = _display(core, style)
    if u[11] < 0.3:   # keyword stuffing: another name of the same thing
        other = names[(int(u[0] * len(names)) + 1) % len(names)]
        core_d = core_d + " " + _display(other, style) if other != core else core_d
    # noisy order: core near the middle, chunks shuffled by the uniforms
    order = np.argsort(u[12:12 + len(chunks)] if len(chunks) <= 4 else np.arange(len(chunks)))
    chunks = [chunks[i] for i in order]
    cut = int(u[13] * (len(chunks) + 1))
    words = parts + chunks[:cut] + [core_d] + chunks[cut:]
    if u[14] < 0.45:
        noise = _NOISE[int(u[15] * len(_NOISE)) % len(_NOISE)]
        words = ([noise] + words) if u[14] < 0.2 else (words + [noise])
    return [w.upper() for w in words] if style > 0.93 else words


_TYPE_SPEC = {t["type"]: t for t in TAXONOMY}


TITLE_MAX_CHARS = 80


def title_text(segments) -> str:
    """A title from its segments (``_item_title_segments``): space-joined, cut to ``TITLE_MAX_CHARS``."""
    return " ".join(segments)[:TITLE_MAX_CHARS]


def _titles(items: pd.DataFrame, seed: int, version: np.ndarray | int = 0, segments: bool = False) -> np.ndarray:
    """Each item's title (object array of str, at most 80 characters), or with ``segments`` the title's
    segments (object array of tuples of str: the brand, each attribute value with its lead word, the product
    name, the seller's noise) whose space-joined text, cut to 80 characters, is the title."""
    ids = items["item_id"].to_numpy(np.int64)
    ver = np.broadcast_to(np.asarray(version, dtype=np.int64), ids.shape)
    u = hash_u01(seed, ids[:, None], ver[:, None], np.arange(16)[None, :])
    cols = ["product_type", "brand", "colour", "size", "material", "compat", "count"]
    rows = items[cols].itertuples(index=False, name=None)
    out = np.empty(len(items), dtype=object)
    for i, r in enumerate(rows):
        segs = _item_title_segments(r, u[i])
        out[i] = tuple(segs) if segments else title_text(segs)
    return out


# ---------------------------------------------------------------------------------------------
def _kp_text(ptype_word: str, c: dict) -> str:
    """Buyer-style query text from a type word and constraints (canonical lowercase)."""
    pre, post = [], []
    if c.get("brand"):
        pre.append(c["brand"])
    if c.get("colour"):
        pre.append(c["colour"])
    if c.get("material"):
        pre.append(c["material"])
    size = c.get("size")
    if size:
        if size in APPAREL:
            post.append(f"size {size}")
        elif size.startswith("size "):
            post.append(size)
        else:
            pre.append(size)
    if c.get("compat"):
        post.append(f"for {c['compat']}")
    if c.get("count"):
        post.append(c["count"])
    return " ".join(pre + [ptype_word] + post)


def _typo(text: str, r: np.random.Generator) -> str:
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 4:
        return text + text[-1]
    i = letters[int(r.integers(1, len(letters) - 1))]
    op = int(r.integers(0, 4))
    if op == 0 and i + 1 < len(text) and text[i + 1].isalpha():   # swap
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if op == 1:                                                    # drop
        return text[:i] + text[i + 1:]
    if op == 2:                                                    # double
        return text[:i] + text[i] + text[i:]
    near = {"a": "s", "e": "r", "i": "o", "o": "p", "n": "m", "s": "a", "t": "y", "r": "e", "c": "v", "l": "k"}
    return text[:i] + near.get(text[i], "e") + text[i + 1:]


def _capacity(spec: dict) -> int:
    """Roughly how many distinct query texts a product type supports."""
    n = len(spec["brands"]) + 1
    for values in spec["slots"].values():
        n *= len(values) + 1
    return n * (1 + len(spec["syn"]))


def _kp_quotas(n_kp: int, taxonomy: list[dict]) -> np.ndarray:
    """Keyphrases per product type: in proportion to type weight^0.6, capped at half the type's
    capacity, the excess moved to types with room (water filling)."""
    w = np.array([t["w"] for t in taxonomy]) ** 0.6
    cap = np.array([max(6, _capacity(t) // 2) for t in taxonomy], dtype=float)
    quota = np.zeros(len(taxonomy))
    left = float(n_kp)
    for _ in range(len(taxonomy) + 1):
        room = quota < cap
        if left < 1 or not room.any():
            break
        add = left * np.where(room, w, 0) / w[room].sum()
        new = np.minimum(cap, quota + add)
        left -= float((new - quota).sum())
        quota = new
    return np.maximum(6, np.round(quota)).astype(int)


def _gen_keyphrases(items: pd.DataFrame, n_kp: int, seed: int, taxonomy: list[dict]) -> pd.DataFrame:
    """Keyphrases per product type: generic, brand_type, type_attr, compat, long_tail, misspelled."""
    rng = np.random.default_rng([seed, 22])
    quota = _kp_quotas(n_kp, taxonomy)
    rows: list[dict] = []
    seen: set[str] = set()

    def add(kind: str, ptype: str, word: str, cons: dict) -> bool:
        text = _kp_text(word, cons)
        if text in seen:
            return False
        seen.add(text)
        rows.append({"text": text, "kind": kind, "product_type": ptype, **{s: cons.get(s) for s in SLOTS}})
        return True

    by_type = {t: g for t, g in items.groupby("product_type", sort=False)}
    for ti, spec in enumerate(taxonomy):
        ptype, q = spec["type"], int(quota[ti])
        start = len(rows)
        names = [ptype, *spec["syn"]]
        n_miss = max(1, int(round(q * PARAMS["misspelled_share"])))
        budget = q - n_miss
        # generic: every name of the type
        for nm in names:
            add("generic", ptype, nm, {})
        # candidates by kind (shuffled), then filled in proportion
        cands: dict[str, list[tuple[str, dict]]] = {"brand_type": [], "type_attr": [], "compat": []}
        for b in spec["brands"]:
            cands["brand_type"].append((ptype, {"brand": b}))
            if spec["syn"]:
                cands["brand_type"].append((spec["syn"][0], {"brand": b}))
        for slot, values in spec["slots"].items():
            for v in values:
                if slot == "compat":
                    cands["compat"].append((ptype, {"compat": v}))
                    cands["compat"].append((names[-1], {"compat": v}))
                    for b in spec["brands"][:3]:
                        cands["compat"].append((ptype, {"compat": v, "brand": b}))
                else:
                    cands["type_attr"].append((ptype, {slot: v}))
        slots = list(spec["slots"])
        for a in range(len(slots)):          # two-attribute queries
            for b_ in range(a + 1, len(slots)):
                for va in spec["slots"][slots[a]]:
                    for vb in spec["slots"][slots[b_]]:
                        kind = "compat" if "compat" in (slots[a], slots[b_]) else "type_attr"
                        cands[kind].append((ptype, {slots[a]: va, slots[b_]: vb}))
        for k in cands:
            order = rng.permutation(len(cands[k]))
            cands[k] = [cands[k][i] for i in order]
        shares = {"brand_type": 0.25, "type_attr": 0.35, "compat": 0.2 if spec["slots"].get("compat") else 0.0}
        lt_share = 0.2
        total = sum(shares.values()) + lt_share
        remaining = budget - (len(rows) - start)
        for k, sh in shares.items():
            take = int(round(remaining * sh / total))
            for word, cons in cands[k][:take]:
                add(k, ptype, word, cons)
        # long tail from real items (3-5 constraints an item actually has), fills the rest
        g = by_type.get(ptype)
        attrs = g[list(SLOTS)].to_numpy(object) if g is not None else np.empty((0, len(SLOTS)), object)
        attempts = 0
        while len(rows) - start < budget and len(attrs) and attempts < budget * 20:
            picks = rng.integers(len(attrs), size=256)
            ks = rng.random(256)
            words = rng.random(256)
            for row_i, ku, wu in zip(picks, ks, words):
                attempts += 1
                if len(rows) - start >= budget:
                    break
                have = [j for j, v in enumerate(attrs[row_i]) if v is not None and v == v]
                if len(have) < 2:
                    continue
                lo, hi = min(3, len(have)), min(5, len(have))
                k = lo + int(ku * (hi - lo + 1))
                chosen = rng.permutation(have)[:k]
                word = ptype if wu < 0.75 else names[int(wu * 97) % len(names)]
                add("long_tail", ptype, word, {SLOTS[j]: attrs[row_i][j] for j in chosen})
        # still short (tiny types): more attribute queries
        rest = cands["type_attr"] + cands["compat"] + cands["brand_type"]
        i = 0
        while len(rows) - start < budget and i < len(rest):
            add("type_attr" if "compat" not in rest[i][1] else "compat", ptype, *rest[i])
            i += 1
        # misspellings of this type's head queries: same constraints, typo text
        sources = [r for r in rows[start:] if r["kind"] in ("generic", "brand_type", "compat", "type_attr")]
        tries = 0
        made = 0
        while made < n_miss and sources and tries < n_miss * 20:
            tries += 1
            src = sources[int(rng.integers(len(sources)))]
            text = _typo(src["text"], rng)
            if text in seen or text == src["text"]:
                continue
            seen.add(text)
            rows.append({**src, "text": text, "kind": "misspelled", "source_text": src["text"]})
            made += 1
    df = pd.DataFrame(rows)
    if "source_text" not in df:
        df["source_text"] = None
    df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    df.insert(0, "keyphrase_id", KEYPHRASE_ID_BASE + np.arange(len(df), dtype=np.int64))
    # misspelled keyphrases: point at the id of their source
    id_of = dict(zip(df["text"], df["keyphrase_id"]))
    df["source_keyphrase_id"] = df["source_text"].map(id_of).astype("Int64")
    # search volume: Zipf over a popularity rank biased by kind and type weight
    kind_w = {"generic": 12.0, "brand_type": 4.0, "compat": 3.0, "type_attr": 2.0, "long_tail": 0.4, "misspelled": 0.3}
    type_w = {t["type"]: t["w"] for t in TAXONOMY}
    score = (np.log(df["kind"].map(kind_w).to_numpy(float)) + np.log(df["product_type"].map(type_w).to_numpy(float))
             + rng.gumbel(size=len(df)))
    rank = np.empty(len(df), dtype=np.int64)
    rank[np.argsort(-score)] = np.arange(1, len(df) + 1)
    vol = 1e6 / rank ** PARAMS["query_zipf_exponent"]
    monthly_total = 30 * 50_000 * max(1.0, len(df) / 3000)
    df["search_volume"] = np.maximum(1, np.round(vol / vol.sum() * monthly_total)).astype(np.int64)
    return df[["keyphrase_id", "text", "kind", "product_type", *SLOTS, "source_keyphrase_id", "search_volume"]]


# ---------------------------------------------------------------------------------------------
class _Timeline:
    """Per-item listing day, deactivation day and title revision days (all deterministic)."""

    def __init__(self, item_ids: np.ndarray, days: int, seed: int):
        n = len(item_ids)
        u = hash_u01(seed, item_ids, 31)
        late = u >= PARAMS["share_listed_day1"]
        # listed on day 0 (before the window) or uniformly on a later day
        self.list_day = np.where(late, 1 + (hash_u01(seed, item_ids, 32) * max(1, days - 1)).astype(np.int64), 0)
        self.list_day = np.minimum(self.list_day, days - 1)
        self.list_offset_s = (hash_u01(seed, item_ids, 33) * 86_400).astype(np.int64)
        self.list_before_days = np.where(late, 0, 1 + (hash_u01(seed, item_ids, 34) * 365).astype(np.int64))
        # deactivation: geometric hazard; beyond the window = never
        hz = PARAMS["deactivate_rate_per_day"]
        g = np.floor(np.log(hash_u01(seed, item_ids, 35)) / np.log1p(-hz)).astype(np.int64)
        self.end_day = np.where(g < days, self.list_day + 1 + g, np.iinfo(np.int64).max)
        self.days, self.seed, self.item_ids, self.n = days, seed, item_ids, n

    def revisions(self, sl: slice) -> np.ndarray:
        """(items in ``sl``, days) bool: the item's title was revised that day (1%/day after listing).
        Computed per item block so a large world never holds the whole matrix."""
        ids = self.item_ids[sl]
        rev = hash_u01(self.seed, ids[:, None], np.arange(self.days)[None, :], 36) < PARAMS["revise_rate_per_day"]
        return rev & (np.arange(self.days)[None, :] > self.list_day[sl][:, None])

    def listed(self, d: int) -> np.ndarray:
        return self.list_day <= d

    def active(self, d: int) -> np.ndarray:
        return (self.list_day <= d) & (d < self.end_day)


def _write_parts(target: str, tables: list[pa.Table]) -> None:
    with atomic_dir(target) as tmp:
        fs, p = _fs(tmp)
        fs.makedirs(p, exist_ok=True)
        for i, t in enumerate(tables):
            with fs.open(f"{p}/part-{i:05d}.parquet", "wb") as f:
                pq.write_table(t, f)
        with fs.open(f"{p}/{layout.SUCCESS}", "wb") as f:
            f.write(b"")


def _write_catalog(lake: Lake, items: pd.DataFrame, tl: _Timeline, days: list[dt.date], seed: int) -> int:
    """Write one full snapshot per day, in item blocks (all days' partitions commit at the end)."""
    schema = arrow_schema("catalog")
    rows = 0
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_dir(lake.path("catalog", ds=d))) for d in days]
        for t in tmps:
            fs, p = _fs(t)
            fs.makedirs(p, exist_ok=True)
        for bstart in range(0, len(items), ITEM_BLOCK):
            blk = items.iloc[bstart:bstart + ITEM_BLOCK]
            sl = slice(bstart, bstart + len(blk))
            ids = blk["item_id"].to_numpy(np.int64)
            base_titles = _titles(blk, seed, 0)
            list_day = tl.list_day[sl]
            list_ts0 = np.where(list_day == 0, -tl.list_before_days[sl], list_day) * 86_400 + tl.list_offset_s[sl]
            rev = tl.revisions(sl)
            version = np.cumsum(rev, axis=1)                                   # title version per day
            last_rev_all = np.maximum.accumulate(np.where(rev, np.arange(len(days)), -1), axis=1)  # -1: none yet
            # every revised title of the block, generated once: item j's version v sits at offset[j] + v - 1
            n_ver = version[:, -1]
            offset = np.concatenate([[0], np.cumsum(n_ver)[:-1]])
            rep = np.repeat(np.arange(len(blk)), n_ver)
            rep_ver = np.arange(len(rep)) - offset[rep] + 1
            revised = _titles(blk.iloc[rep], seed, rep_ver) if len(rep) else np.empty(0, object)
            for di in range(len(days)):
                keep = np.flatnonzero(list_day <= di)
                ver = version[keep, di]
                titles = base_titles[keep].copy()
                r = ver > 0
                titles[r] = revised[offset[keep[r]] + ver[r] - 1]
                last_rev = last_rev_all[keep, di]
                end = tl.end_day[sl][keep]
                rev_ts = last_rev * 86_400 + (hash_u01(seed, ids[keep], last_rev, 37) * 86_400).astype(np.int64)
                upd = np.where(last_rev >= 0, rev_ts, list_ts0[keep])
                upd = np.where(end <= di, np.maximum(upd, end * 86_400 + 3_600), upd)
                t0 = np.datetime64(days[0].isoformat(), "us")
                table = pa.table({
                    "item_id": ids[keep],
                    "title": pa.array(titles, pa.string()),
                    "category": pa.array(blk["category"].to_numpy()[keep], pa.string()),
                    "updated_at": t0 + (upd * 1_000_000).astype("timedelta64[us]"),
                    "active": di < end,
                }, schema=schema)
                fs, p = _fs(tmps[di])
                with fs.open(f"{p}/part-{bstart // ITEM_BLOCK:05d}.parquet", "wb") as f:
                    pq.write_table(table, f)
                rows += table.num_rows
        for t in tmps:
            fs, p = _fs(t)
            with fs.open(f"{p}/{layout.SUCCESS}", "wb") as f:
                f.write(b"")
    return rows


# ---------------------------------------------------------------------------------------------
def item_click_factors(items: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-item multipliers of P(click) and the items' image vectors (the hidden click process, independent of any
    model): ``quality`` (lognormal residual, learnable only from an item's own history) x ``popularity **
    ctr_popularity_exponent`` x a (product type, brand) effect x an image appeal, normalised to mean 1 over items.

    Returns (factor float64 ``(n_items,)``, image vectors float32 ``(n_items, image_dim)``: the appeal times a fixed
    unit direction plus N(0, ``image_noise``) in every dimension, so a model has to compress it to use it)."""
    P = PARAMS
    n = len(items)
    quality = np.exp(np.random.default_rng([seed, 44]).normal(0, P["item_quality_sigma"], size=n))
    pop = items["popularity"].to_numpy(np.float64) ** P["ctr_popularity_exponent"]
    rng = np.random.default_rng([seed, 45])
    brand_key = items["product_type"].astype(str) + "|" + items["brand"].fillna("(unbranded)").astype(str)
    codes, uniques = pd.factorize(brand_key, sort=True)
    brand = np.exp(rng.normal(0, P["brand_ctr_sigma"], size=len(uniques)))[codes]
    appeal = rng.normal(0, P["image_appeal_sigma"], size=n)
    factor = quality * pop * brand * np.exp(appeal)
    direction = rng.normal(size=P["image_dim"])
    direction /= np.linalg.norm(direction)
    images = (appeal[:, None] / P["image_appeal_sigma"] * direction[None, :]
              + rng.normal(0, P["image_noise"], size=(n, P["image_dim"]))).astype(np.float32)
    return factor / factor.mean(), images


def _simulate_day(di: int, day: dt.date, items: pd.DataFrame, kps: pd.DataFrame, truth: Truth, tl: _Timeline,
                  seed: int, searches: int, quality: np.ndarray, kp_text: pa.Array) -> tuple[pa.Table, pa.Table, dict]:
    """One day of searches -> (events, sr verdicts, stats). Vectorised per product type."""
    P = PARAMS
    rng = np.random.default_rng([seed, 33, di])
    vol = kps["search_volume"].to_numpy(np.float64)
    # truth index of each keyphrase row / item row (frames are sorted by id like Truth)
    q = rng.choice(len(kps), size=searches, p=vol / vol.sum())
    search_ts = (np.sort(rng.beta(2.2, 1.6, size=searches)) * 86_399).astype(np.int64)  # evening-heavy
    rng.shuffle(search_ts)
    active = tl.active(di)
    logpop = np.log(items["popularity"].to_numpy(np.float64))
    imp_s, imp_i, imp_pos, sr_k, sr_i = [], [], [], [], []
    n_shown = rng.integers(P["shown_min"], P["shown_max"] + 1, size=searches)
    for ty in np.unique(truth.kp_type[q]):
        s_idx = np.flatnonzero(truth.kp_type[q] == ty)
        pool = np.flatnonzero((truth.item_type == ty) & active)
        if not len(pool):
            continue
        size = int(min(P["retrieval_pool_max"], max(P["shown_max"], round(P["retrieval_pool_share"] * len(pool)))))
        if len(pool) > size:   # weighted sampling without replacement (Gumbel top-k, Efraimidis-Spirakis)
            key = P["retrieval_pop_weight"] * logpop[pool] + rng.gumbel(size=len(pool))
            pool = np.sort(pool[np.argpartition(-key, size - 1)[:size]])
        uq, inv = np.unique(q[s_idx], return_inverse=True)
        depth = min(P["retrieval_depth"], len(pool))
        lp = P["retrieval_pop_weight"] * logpop[pool]
        ucap = max(1, 1_000_000 // len(pool))
        k1 = min(len(pool), P["retrieval_first_stage"])
        for u0 in range(0, len(uq), ucap):                   # blocks of distinct queries x the pool
            _, frac = truth.match_by_index(pool[None, :], uq[u0:u0 + ucap, None])
            base = (lp[None, :] + P["retrieval_match_weight"] * frac).astype(np.float32)
            # first stage: each query keeps its k1 best candidates by static score (popularity + match)
            if k1 < len(pool):
                cand = np.argpartition(-base, k1 - 1, axis=1)[:, :k1]
            else:
                cand = np.broadcast_to(np.arange(len(pool)), base.shape)
            base = np.take_along_axis(base, cand, axis=1)
            frac = np.take_along_axis(frac, cand, axis=1).astype(np.float32)
            in_block = (inv >= u0) & (inv < u0 + ucap)
            bs, bi = s_idx[in_block], inv[in_block] - u0
            chunk = max(1, 2_000_000 // k1)
            for c0 in range(0, len(bs), chunk):
                cs, ci = bs[c0:c0 + chunk], bi[c0:c0 + chunk]
                # second stage: per-search noisy ranking (Gumbel), the SR filter looks at the top `depth`
                r = base[ci] + rng.gumbel(size=(len(cs), k1))
                if depth < k1:
                    top = np.argpartition(-r, depth - 1, axis=1)[:, :depth]
                else:
                    top = np.broadcast_to(np.arange(k1), (len(cs), k1)).copy()
                order = np.argsort(-np.take_along_axis(r, top, axis=1), axis=1)
                top = np.take_along_axis(top, order, axis=1)                       # looked at, best first
                f_top = np.take_along_axis(frac[ci], top, axis=1)
                items_top = pool[np.take_along_axis(cand[ci], top, axis=1)]
                sr = _sr_score(seed, truth.item_ids[items_top], truth.kp_ids[q[cs]][:, None], f_top >= 1.0, f_top)
                passed = sr >= P["sr_threshold"]
                rank = np.cumsum(passed, axis=1)
                shown = passed & (rank <= n_shown[cs][:, None])
                rr, cc = np.nonzero(shown)
                imp_s.append(cs[rr])
                imp_i.append(items_top[rr, cc])
                imp_pos.append(rank[rr, cc])
                sr_k.append(np.repeat(q[cs], top.shape[1]))
                sr_i.append(items_top.ravel())
    if imp_s:
        s, ii, pos = np.concatenate(imp_s), np.concatenate(imp_i), np.concatenate(imp_pos).astype(np.int32)
    else:
        s, ii, pos = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
    kk = q[s]
    rel, frac = truth.match_by_index(ii, kk)
    base_ctr = np.where(rel, P["ctr_relevant"], P["ctr_irrelevant"] + P["ctr_partial_match"] * frac)
    p_click = base_ctr * pos.astype(float) ** -P["position_bias_exponent"] * quality[ii]
    clicked = rng.random(len(s)) < np.clip(p_click, 0, 1)
    ts_imp = search_ts[s]
    ts_click = np.minimum(ts_imp[clicked] + 1 + rng.exponential(25.0, size=int(clicked.sum())).astype(np.int64), 86_399)
    n_imp, n_clk = len(s), int(clicked.sum())
    t0 = np.datetime64(day.isoformat(), "us")
    all_pos = np.concatenate([pos, pos[clicked]]).astype(np.int32)
    ts_us = np.concatenate([ts_imp, ts_click]) * 1_000_000 + all_pos.astype(np.int64) * 1000
    is_click = np.concatenate([np.zeros(n_imp, bool), np.ones(n_clk, bool)])
    order = np.lexsort((is_click, ts_us))                  # by time, an impression before its click
    rows_i = np.concatenate([ii, ii[clicked]])[order]
    rows_k = np.concatenate([kk, kk[clicked]])[order]
    ids = pc.cast(pa.array(int(f"{day:%Y%m%d}") * 1_000_000_000 + np.arange(len(order), dtype=np.int64)), pa.string())
    ev = pa.table({
        "event_id": ids,
        "ts": pa.array(t0 + ts_us[order].astype("timedelta64[us]"), pa.timestamp("us")),
        "item_id": truth.item_ids[rows_i],
        "keyphrase_id": truth.kp_ids[rows_k],
        "query": pc.take(kp_text, pa.array(rows_k)),
        "event": pc.take(pa.array(["impression", "click"]), pa.array(is_click[order].astype(np.int8))),
        "position": all_pos[order],
    }, schema=arrow_schema("events"))
    # SR verdicts on every distinct pair the filter looked at today
    if sr_k:
        pk, pi = np.concatenate(sr_k), np.concatenate(sr_i)
        key = np.sort(pd.unique(pi.astype(np.int64) * (len(kps) + 1) + pk))
        pi, pk = key // (len(kps) + 1), key % (len(kps) + 1)
    else:
        pi = pk = np.empty(0, np.int64)
    r2, f2 = truth.match_by_index(pi, pk)
    score = _sr_score(seed, truth.item_ids[pi], truth.kp_ids[pk], r2, f2)
    srdf = pa.table({"item_id": truth.item_ids[pi], "keyphrase_id": truth.kp_ids[pk],
                     "score": score.astype(np.float64), "label": (score >= P["sr_threshold"]).astype(np.int32)},
                    schema=arrow_schema("sr_input"))
    stats = {"searches": int(searches), "impressions": int(n_imp), "clicks": n_clk, "sr_pairs": int(srdf.num_rows),
             "impressions_relevant_share": float(rel.mean()) if n_imp else 0.0}
    return ev, srdf, stats


def _sr_score(seed: int, item_ids, kp_ids, rel, frac) -> np.ndarray:
    """The search-relevance model: a noisy, deterministic per-pair function of the truth."""
    raw = 0.2 + 0.4 * rel + 0.2 * frac + PARAMS["sr_noise"] * hash_normal(seed + 991, item_ids, kp_ids)
    return 1.0 / (1.0 + np.exp(-6.0 * (raw - 0.5)))


# ---------------------------------------------------------------------------------------------
def run(settings: Settings, scale=None, seed=None, days=None, start_date=None, searches_per_day=None) -> dict:
    """Generate (or regenerate) the synthetic world in the settings' lake; returns its stats.

    Arguments left None come from ``settings.synth``. Day partitions of the raw inputs outside the new range
    are deleted. Raises ConfigError (exit 2): ``days`` < 1, a bad ``start_date`` or scale, ``searches_per_day`` < 1."""
    t_start = time.perf_counter()
    cfg = settings.synth
    scale = cfg.scale if scale is None else scale
    seed = int(cfg.seed if seed is None else seed)
    days = int(cfg.days if days is None else days)
    if days < 1:
        raise ConfigError(f"synth days must be >= 1, got {days}")
    start = parse_ds(cfg.start_date if start_date is None else start_date)
    name, n_items, n_kp, default_searches = resolve_scale(scale)
    searches = int(default_searches if searches_per_day is None else searches_per_day)
    if searches < 1:
        raise ConfigError(f"searches_per_day must be >= 1, got {searches}")
    lake = Lake.from_settings(settings)
    day_list = [start + dt.timedelta(days=i) for i in range(days)]
    log.info("synth: scale=%s items=%d keyphrases~%d searches/day=%d days=%d from %s seed=%d into %s",
             name, n_items, n_kp, searches, days, start, seed, lake.root)

    taxonomy = taxonomy_for(n_items)
    items = _gen_items(n_items, seed, taxonomy)
    kps = _gen_keyphrases(items, n_kp, seed, taxonomy)
    truth = Truth.from_frames(items, kps)           # items/kps are already sorted by id
    tl = _Timeline(items["item_id"].to_numpy(np.int64), days, seed)
    quality, images = item_click_factors(items, seed)

    # hidden truth
    write_parquet_atomic(items, lake.path("synth", "items"))
    write_parquet_atomic(kps, lake.path("synth", "keyphrases"))
    # platform inputs
    write_parquet_atomic(kps[["keyphrase_id", "text", "search_volume"]], lake.path("keyphrases"))
    # an optional input: one image vector per item (a platform with images provides it; without, nothing needs it)
    write_parquet_atomic(pd.DataFrame({"item_id": items["item_id"].to_numpy(np.int64), "image_embedding": list(images)}),
                         lake.path("item_images"))
    _remove_stale(lake, {d.isoformat() for d in day_list})
    catalog_rows = _write_catalog(lake, items, tl, day_list, seed)
    log.info("synth: catalog written (%d snapshot rows over %d days)", catalog_rows, days)

    kp_text = pa.array(kps["text"].to_numpy(), pa.string())
    totals = {"searches": 0, "impressions": 0, "clicks": 0, "sr_pairs": 0}
    rel_share = []
    for di, day in enumerate(day_list):
        ev, srdf, day_stats = _simulate_day(di, day, items, kps, truth, tl, seed, searches, quality, kp_text)
        _write_parts(lake.path("events", ds=day), [ev])
        _write_parts(lake.path("sr_input", ds=day), [srdf])
        for k in totals:
            totals[k] += day_stats[k]
        rel_share.append(day_stats["impressions_relevant_share"])
        log.info("synth: %s %d impressions, %d clicks, %d SR pairs",
                 day, day_stats["impressions"], day_stats["clicks"], day_stats["sr_pairs"])

    kinds = kps["kind"].value_counts().to_dict()
    stats = {
        "scale": name, "seed": seed, "days": days, "start_date": start.isoformat(),
        "end_date": day_list[-1].isoformat(), "items": int(len(items)),
        "items_active_last_day": int(tl.active(days - 1).sum()), "keyphrases": int(len(kps)),
        "keyphrase_kinds": {k: int(v) for k, v in kinds.items()}, "product_types": len(taxonomy),
        "searches_per_day": searches, "searches": totals["searches"], "impressions": totals["impressions"],
        "clicks": totals["clicks"], "events": totals["impressions"] + totals["clicks"], "sr_pairs": totals["sr_pairs"],
        "impressions_relevant_share": float(np.mean(rel_share)) if rel_share else 0.0,
        "catalog_rows": catalog_rows, "seconds": round(time.perf_counter() - t_start, 2),
    }
    lake.write_json(layout.synth_world_meta_path(lake), {
        "simulated": True, "scale": name, "seed": seed, "days": days, "start_date": start.isoformat(),
        "sizes": {"items": stats["items"], "keyphrases": stats["keyphrases"], "searches_per_day": searches,
                  "product_types": len(taxonomy)},
        "parameters": PARAMS, "stats": stats,
        "note": "hidden truth of a synthetic marketplace: never train on synth/*",
    })
    lake.write_run_stats(day_list[-1], "synth", stats)
    log.info("synth: done in %.1f s: %d events", stats["seconds"], stats["events"])
    return stats


def _remove_stale(lake: Lake, keep: set[str]) -> None:
    """A rerun replaces the world: drop day partitions of the raw inputs that the new range lacks."""
    for dataset in ("catalog", "events", "sr_input"):
        for ds in lake.partitions(dataset):
            if ds not in keep:
                fs, p = _fs(lake.path(dataset, ds=ds))
                log.info("synth: removing stale partition %s", p)
                fs.rm(p, recursive=True)


# ---------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--scale", default=None,
                        help="tiny | demo | small | large, or a number of items (default: settings)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (same seed -> same world)")
    parser.add_argument("--days", type=int, default=None, help="number of days of logs and catalog snapshots")
    parser.add_argument("--start-date", default=None, help="first day, YYYY-MM-DD")
    parser.add_argument("--searches-per-day", type=int, default=None, help="search volume per day (events ~ 10x)")


def main(settings: Settings, args) -> int:
    """``kp synth``: ``run`` with the parsed options; prints one human-readable line (scale, seed, dates, counts,
    seconds, lake root) and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    stats = run(settings, scale=args.scale, seed=args.seed, days=args.days, start_date=args.start_date,
                searches_per_day=args.searches_per_day)
    print(f"synthetic world '{stats['scale']}' (seed {stats['seed']}) {stats['start_date']}..{stats['end_date']}: "
          f"{stats['items']} items, {stats['keyphrases']} keyphrases, {stats['events']} events "
          f"({stats['impressions']} impressions, {stats['clicks']} clicks), {stats['sr_pairs']} SR verdicts "
          f"in {stats['seconds']} s -> {Lake.from_settings(settings).root}")
    return 0
