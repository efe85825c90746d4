"""Model input formats: an empty field costs no tokens and no separator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keyphrase_pipeline.models.text import SEP, cross_text, item_text, keyphrase_text


def test_empty_category_spends_no_separator():
    assert item_text("Red Phone Case", "") == "Red Phone Case"
    assert item_text("Red Phone Case", None) == "Red Phone Case"
    assert item_text("Red Phone Case", float("nan")) == "Red Phone Case"
    assert cross_text("phone case", "", "Red Phone Case") == ("phone case", "Red Phone Case")
    assert cross_text("phone case", "  ", "Red Phone Case") == ("phone case", "Red Phone Case")


def test_category_is_joined_as_the_paper_does():
    assert item_text(" Red  Phone Case ", "Cases") == f"Red Phone Case{SEP}Cases"
    assert cross_text("phone case", "Cases", "Red Phone Case") == ("phone case", f"Cases{SEP}Red Phone Case")
    assert keyphrase_text("  red   case ") == "red case"


def test_empty_category_costs_no_tokens():
    """The tokenizer sees exactly the title's tokens (plus [CLS]/[SEP] of the pair) when there is no category."""
    from transformers import AutoTokenizer

    from keyphrase_pipeline.models.base import default_encoder_path

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    q, d = cross_text("phone case", "", "Red Phone Case")
    with_pair = tok(q, d)["input_ids"]
    alone = tok("phone case", "Red Phone Case")["input_ids"]
    assert with_pair == alone and tok.sep_token_id in with_pair and with_pair.count(tok.sep_token_id) == 2


# ---- the normalisation rule (issue 13) ---------------------------------------------------------------
import sys  # noqa: E402
import unicodedata  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keyphrase_pipeline.models.text import (  # noqa: E402
    EMPTY,
    UNREADABLE,
    clean,
    is_blank,
    spark_is_blank,
    text_problems,
    unreadable_mask,
)

INVISIBLE = ["\u200b", "\ufeff", "\u200d", "\u202e", "\u2066\u2069", "\u200b\u200c\u200d\ufeff\u2060",
             "\u202e\u2066 \u2069\u202c", "\u00ad", "\x00\x07\x1b", "\u200e\u200f\u061c", "\U000e0001\U000e0041"]
HOSTILE = INVISIBLE + [
    "", " ", "\t\n\r\v\f", "\x1c\x1d\x1e\x1f\x85", "\u00a0\u2000\u3000\u2028\u2029", "mug", " red \n mug ",
    "red\nmug", "red\x00mug", "re\u200bd mug", "\ufeffmug", "mug \u202eseY\u202c", "ｍｕｇ", "ℌ𝔢𝔩𝔩𝔬",
    "ﬁsh", "e\u200b\u0301", "\u0301", "🙂", "👨\u200d👩\u200d👧", "🇫🇷", "中文", "ü ß", "NA", "null", "007",
    "A" * 300, "\U0001d400\U0001d401", "\u00a8", "x\ud800y",
]


@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_only_text_is_blank(text):
    assert clean(text) == "" and is_blank(text)
    assert keyphrase_text(text) == "" and item_text(text, "") == ""
    assert item_text(text, "Kitchen") == f"{SEP}Kitchen"  # not blank: why the stages check the title itself


def test_clean_removes_controls_normalises_and_collapses():
    assert clean("re\u200bd\u00ad mug\ufeff") == "red mug"
    assert clean("red\nmug\tcase\r\n") == "red mug case"  # whitespace controls separate words
    assert clean("red\x00mug") == "redmug"
    assert clean("ｍｕｇ １２３") == "mug 123" and clean("ℌ𝔢𝔩𝔩𝔬") == "Hello" and clean("ﬁsh") == "fish"
    assert clean("a\u00a0b\u3000c\u2028d") == "a b c d"
    assert clean("e\u200b\u0301") == "\u00e9"  # the mark composes once the invisible character is gone
    assert clean("👨\u200d👩\u200d👧") == "👨👩👧"
    assert clean("x\ud800y") == "xy"  # a lone surrogate could not even be written as UTF-8
    assert clean(None) == "" and clean(float("nan")) == "" and clean(7) == "7"
    # a nullable pandas column's missing values are missing, not the words "<NA>" or "NaT"
    assert clean(pd.NA) == "" and clean(pd.NaT) == "" and clean(np.float32("nan")) == ""
    from decimal import Decimal

    assert clean(Decimal("sNaN")) == "sNaN" and clean("NA") == "NA" and clean("nan") == "nan"  # values, not missing
    assert clean("NA") == "NA" and clean("null") == "null" and clean("007") == "007"


def test_clean_leaves_no_dropped_character_and_is_idempotent_on_every_code_point():
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        out = clean(f"a{ch}b{ch}")
        assert clean(out) == out, hex(cp)
        assert not any(unicodedata.category(x) in ("Cc", "Cf", "Cs") for x in out), hex(cp)
        assert is_blank(ch) == (unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp")), hex(cp)


@pytest.fixture(scope="module")
def tokenizer():
    from keyphrase_pipeline.models.base import default_encoder_path
    from keyphrase_pipeline.models.text import tokenizer_at

    return tokenizer_at(default_encoder_path())


def test_emoji_only_and_overlong_words_are_unreadable(tokenizer):
    texts = ["🙂", "🙂 😀 🎉", "A" * 300, "[UNK]", "\u200b", "", "mug 🙂", "中文", "ｍｕｇ", "★", "007", "ℌ𝔢𝔩𝔩𝔬"]
    mask = unreadable_mask(texts, tokenizer)
    assert mask.dtype == bool and mask.shape == (len(texts),)
    assert mask.tolist() == [True, True, True, True, True, True, False, False, False, False, False, False]
    assert text_problems(texts, tokenizer) == [UNREADABLE] * 4 + [EMPTY, EMPTY] + [None] * 6
    assert text_problems(texts) == [None] * 4 + [EMPTY, EMPTY] + [None] * 6  # no tokenizer: blank only
    assert unreadable_mask([], tokenizer).shape == (0,)


def test_unreadable_mask_agrees_with_the_slow_path(tokenizer):
    class Slow:  # no Rust backend: the plain tokenizer call
        def __init__(self, tok):
            self.tok, self.all_special_ids = tok, tok.all_special_ids

        def __len__(self):
            return len(self.tok)

        def __call__(self, texts, **kw):
            return self.tok(texts, **kw)

    np.testing.assert_array_equal(unreadable_mask(HOSTILE, Slow(tokenizer)), unreadable_mask(HOSTILE, tokenizer))


def test_unreadable_mask_tokenizes_in_chunks(tokenizer, monkeypatch):
    """A fast tokenizer's encodings cost kilobytes a text: the mask is computed a chunk at a time, so a million
    training texts never hold a million encodings (issue 32: 15 KB a training row before, bench/training_memory.py),
    and the chunks give the same mask as one call."""
    from keyphrase_pipeline.models import text

    class Counting:  # the fast path, counting the texts per backend call
        def __init__(self, tok):
            self.tok, self.all_special_ids, self.calls = tok, tok.all_special_ids, []
            outer = self

            class Backend:
                def encode_batch(self, batch, **kw):
                    outer.calls.append(len(batch))
                    return tok.backend_tokenizer.encode_batch(batch, **kw)

            self.backend_tokenizer = Backend()

        def __len__(self):
            return len(self.tok)

    texts = list(HOSTILE) * 7
    whole = unreadable_mask(texts, tokenizer)
    monkeypatch.setattr(text, "UNREADABLE_CHUNK", 5)
    counting = Counting(tokenizer)
    np.testing.assert_array_equal(unreadable_mask(texts, counting), whole)
    assert max(counting.calls) <= 5 and len(counting.calls) > 1


@pytest.mark.spark
def test_spark_blank_check_agrees_with_clean(spark):
    """The Spark SQL expression (Java regex) and the Python rule agree on hostile strings and on every
    code point of Unicode (one character, and between letters)."""
    from pyspark.sql import types as T

    texts = [t for t in HOSTILE if "\ud800" not in t] + [chr(cp) for cp in range(sys.maxunicode + 1)
                                                          if not 0xD800 <= cp <= 0xDFFF]
    texts += [f"a{t}" for t in INVISIBLE]
    import pandas as pd

    pdf = pd.DataFrame({"i": range(len(texts) + 1), "t": texts + [None]})
    df = spark.createDataFrame(pdf, T.StructType([T.StructField("i", T.LongType()), T.StructField("t", T.StringType())]))
    got = dict(df.select("i", spark_is_blank("t").alias("b")).toPandas().itertuples(index=False))
    want = {i: is_blank(t) for i, t in enumerate(texts)} | {len(texts): True}
    diff = {hex(ord(texts[i])) if len(texts[i]) == 1 else texts[i]: (got[i], want[i]) for i in want if got[i] != want[i]}
    # Java 17 knows Unicode 13; Python's tables are newer: only code points assigned since may differ
    newer = {k for k in diff if isinstance(k, str) and k.startswith("0x")
             and unicodedata.category(chr(int(k, 16))) == "Cf" and int(k, 16) in (0x890, 0x891)}
    assert set(diff) <= newer, diff
