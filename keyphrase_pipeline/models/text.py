"""How model inputs are written from item and keyphrase fields: one place, used by training,
export, batch inference and scoring so the towers always see the same text they were trained on."""

from __future__ import annotations

SEP = " [SEP] "


def clean(text: object) -> str:
    """None/NaN -> '', collapse whitespace."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    return " ".join(str(text).split())


def item_text(title: object, category: object = "") -> str:
    """Item tower input: ``title [SEP] category`` (category may be empty)."""
    t, c = clean(title), clean(category)
    return f"{t}{SEP}{c}" if c else t


def keyphrase_text(keyphrase: object) -> str:
    """Keyphrase tower input: the buyer query as typed."""
    return clean(keyphrase)


def cross_text(keyphrase: object, category: object, title: object) -> tuple[str, str]:
    """Cross-encoder input, as the paper: ``query [SEP] category [SEP] title`` as a (query, rest) pair."""
    c, t = clean(category), clean(title)
    return clean(keyphrase), (f"{c}{SEP}{t}" if c else t)
