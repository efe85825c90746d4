"""How model inputs are written from item and keyphrase fields: one place, used by training,
export, batch inference and scoring so the towers always see the same text they were trained on.

The normalisation rule (``clean``), used by every stage that reads a title, category or keyphrase:

1. None / NaN (Python's or numpy's) / pandas' ``NA`` and ``NaT`` (a nullable column's missing value) -> ``''``; anything else ``str()``;
2. characters of Unicode category Cc (controls), Cf (format: zero-width space/joiners U+200B-U+200D,
   BOM U+FEFF, soft hyphen, bidi marks, embeddings, overrides and isolates U+200E/U+200F,
   U+202A-U+202E, U+2066-U+2069, tag characters) and Cs (lone surrogates, which cannot be stored as UTF-8)
   are removed; those that are whitespace (tab, newline, CR, VT, FF, U+001C-U+001F, U+0085) become a
   space, so ``red\\nmug`` stays two words;
3. NFKC (compatibility forms to their plain letters: ``ｍｕｇ`` -> ``mug``, ``ℌ𝔢𝔩𝔩𝔬`` -> ``Hello``,
   NBSP -> space);
4. whitespace (``str.split``: Unicode Z categories and the whitespace controls) collapsed to one space,
   stripped at both ends.

A text that is empty after ``clean`` is *blank*; one whose tokens under the encoder's tokenizer are all
special or unknown (``[UNK]``: emoji-only, a 200-letter "word") is *unreadable* (``unreadable_mask``).
Neither is embedded, judged or trained on: every tower input of such texts is the same, so all of them
would get the same vector and be recommended to each other at cosine 1. The stages quarantine them with
a reason (docs/DATA.md, "Text normalisation").
"""

from __future__ import annotations

import functools
import numbers
import sys
import unicodedata
from typing import Sequence

SEP = " [SEP] "
EMPTY = "empty"  # the text is blank after ``clean``
UNREADABLE = "unreadable"  # every token is a special or unknown one under the encoder's tokenizer
DROPPED_CATEGORIES = ("Cc", "Cf", "Cs")
# Java regex (Spark ``rlike``/``regexp_replace``) for one character that ``clean`` deletes or turns into
# whitespace: a text made only of these is blank (``spark_is_blank``). Python's whitespace is a subset of
# Z + Cc, and NFKC never maps anything else to nothing or to whitespace alone (tested on every code point).
JAVA_BLANK_CHAR = r"[\p{Cc}\p{Cf}\p{Cs}\p{Z}]"
# pandas' missing-value singletons (pd.NA, pd.NaT), told by type name so this module does not import pandas
_MISSING_TYPES = frozenset({"NAType", "NaTType"})


@functools.lru_cache(maxsize=1)
def _table() -> dict[int, str | None]:
    """``str.translate`` table: Cc/Cf/Cs code points -> None (deleted) or ' ' (whitespace controls)."""
    out: dict[int, str | None] = {}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch) in DROPPED_CATEGORIES:
            out[cp] = " " if ch.isspace() else None
    return out


def is_missing(value: object) -> bool:
    """True for a missing value as pandas and numpy read one: None, a real NaN (Python's ``float``, numpy's floats),
    pandas' ``NA`` and ``NaT``. Anything else, the strings ``"NA"`` and ``"nan"`` included, is a value."""
    return (value is None or (isinstance(value, numbers.Real) and value != value)
            or type(value).__name__ in _MISSING_TYPES)


def clean(text: object) -> str:
    """The normalised text (module docstring: Cc/Cf/Cs removed, NFKC, whitespace collapsed).

    Args:
        text: any value; a missing value (``is_missing``: None, a NaN, pandas' ``pd.NA`` and ``pd.NaT``, which
            ``str()`` would make the words ``<NA>``, ``NaT``) gives ``''``, other non-strings are ``str()``-ed.
    Returns:
        str, possibly empty; ``clean(clean(x)) == clean(x)``.
    """
    if is_missing(text):
        return ""
    s = str(text)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s.translate(_table()))
    elif not s.isprintable():  # ASCII controls only; ASCII is already NFKC
        s = s.translate(_table())
    return " ".join(s.split())


def is_blank(text: object) -> bool:
    """True when ``clean(text)`` is empty (None, whitespace, invisible characters only)."""
    return not clean(text)


def item_text(title: object, category: object = "") -> str:
    """Item tower input: ``title [SEP] category`` (category may be empty)."""
    t, c = clean(title), clean(category)
    return f"{t}{SEP}{c}" if c else t


def keyphrase_text(keyphrase: object) -> str:
    """Keyphrase tower input: the buyer query as typed."""
    return clean(keyphrase)


def keyphrase_identity(keyphrase: object) -> str:
    """The key under which two keyphrases are one buyer query: ``keyphrase_text`` lower-cased ("Red  Shoes"
    and "red shoes" are one), as ``eval_labels.split_by_keyphrase`` and ``kd_pairs`` compare them; a seller's
    top-K holds at most one keyphrase per key (``models.topk``). Returns str ('' for a blank keyphrase)."""
    return keyphrase_text(keyphrase).lower()


def cross_text(keyphrase: object, category: object, title: object) -> tuple[str, str]:
    """Cross-encoder input, as the paper: ``query [SEP] category [SEP] title`` as a (query, rest) pair."""
    c, t = clean(category), clean(title)
    return clean(keyphrase), (f"{c}{SEP}{t}" if c else t)


# ---- texts the encoder cannot read ---------------------------------------------------------------------
UNREADABLE_CHUNK = 10_000  # texts per tokenizer call in unreadable_mask


def unreadable_mask(texts: Sequence[object], tokenizer) -> "object":
    """Which texts the tokenizer turns into special/unknown tokens only (or no token at all).

    Args:
        texts: n texts (normalised with ``clean`` here).
        tokenizer: a Hugging Face tokenizer (the encoder's; fast ones are used through their Rust backend,
            one batch call per ``UNREADABLE_CHUNK`` texts, with the backend's own truncation, i.e. what the model
            sees).
    Returns:
        ``np.ndarray`` of bool, shape ``(n,)``: True where no token is outside ``tokenizer.all_special_ids``
        (which holds ``[UNK]``), e.g. emoji-only or blank texts.
    """
    import numpy as np

    cleaned = [clean(t) for t in texts]
    out = np.ones(len(cleaned), dtype=bool)
    idx = [i for i, t in enumerate(cleaned) if t]
    if not idx:
        return out
    special_ids = list(tokenizer.all_special_ids)
    special = np.zeros(max(len(tokenizer), max(special_ids, default=0) + 1), dtype=bool)
    special[special_ids] = True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    # in chunks: a fast tokenizer's Encoding (ids, offsets, masks, tokens) costs kilobytes a text, so one call over
    # a million texts would hold gigabytes at once (issue 32); a chunk's encodings are dropped before the next
    for start in range(0, len(idx), UNREADABLE_CHUNK):
        part = idx[start:start + UNREADABLE_CHUNK]
        batch = [cleaned[i] for i in part]
        if backend is not None:
            ids = [e.ids for e in backend.encode_batch(batch, add_special_tokens=False)]
        else:  # a slow (pure Python) tokenizer
            ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
        for i, row in zip(part, ids):
            out[i] = bool(special[np.asarray(row, dtype=np.int64)].all()) if len(row) else True
    return out


def text_problems(texts: Sequence[object], tokenizer=None) -> list[str | None]:
    """Per text: ``EMPTY`` (blank after ``clean``), ``UNREADABLE`` (``unreadable_mask``; only with a
    ``tokenizer``) or None (fine). A list of length n."""
    texts = list(texts)
    out: list[str | None] = [EMPTY if is_blank(t) else None for t in texts]
    if tokenizer is not None:
        idx = [i for i, p in enumerate(out) if p is None]
        mask = unreadable_mask([texts[i] for i in idx], tokenizer)
        for i, bad in zip(idx, mask):
            if bad:
                out[i] = UNREADABLE
    return out


@functools.lru_cache(maxsize=8)
def tokenizer_at(path: str):
    """The Hugging Face tokenizer saved in ``path`` (a model or exported tower directory), cached per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def spark_is_blank(col):
    """Spark boolean Column: the string column ``col`` is null or blank after ``clean`` (only Cc/Cf/Cs and
    whitespace characters): a Spark SQL expression, no Python UDF. ``tests/models/test_text.py`` checks it
    against ``is_blank`` on every Unicode code point and on hostile strings."""
    from pyspark.sql import functions as F

    c = F.col(col) if isinstance(col, str) else col
    return c.isNull() | (F.length(F.regexp_replace(c, JAVA_BLANK_CHAR, "")) == 0)
