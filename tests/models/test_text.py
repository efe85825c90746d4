"""Model input formats: an empty field costs no tokens and no separator."""

from __future__ import annotations

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
