import re
from pathlib import Path

import pandas as pd
import pytest

from keyphrase_pipeline.core.contracts import CONTRACTS, arrow_schema, check_pandas, columns, spark_schema
from keyphrase_pipeline.core.errors import SchemaError

DATA_MD = Path(__file__).resolve().parents[2] / "docs" / "DATA.md"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_arrow_schema_satisfies_its_own_contract(name):
    schema = arrow_schema(name)
    empty = schema.empty_table().to_pandas()
    check_pandas(empty, name)


def test_missing_and_mistyped_columns_are_named():
    df = pd.DataFrame({"item_id": [1], "keyphrase_id": [2], "impressions": [3], "clicks": ["x"]})
    with pytest.raises(SchemaError, match=r"'clicks' has type string, expected int64"):
        check_pandas(df, "ctr_daily")
    with pytest.raises(SchemaError, match=r"missing column 'impressions'"):
        check_pandas(df.drop(columns=["impressions"]), "ctr_daily")


def test_optional_columns_may_be_absent():
    kp = pd.DataFrame({"keyphrase_id": pd.Series([1], dtype="int64"), "text": ["phone case"]})
    check_pandas(kp, "keyphrases")
    assert "search_volume" in columns("keyphrases") and "search_volume" not in columns("keyphrases", False)


def test_spark_schema_types():
    s = spark_schema("embeddings")
    assert s["embedding"].dataType.typeName() == "array"
    assert s["id"].dataType.typeName() == "long"


def test_docs_describe_every_contract_column():
    """docs/DATA.md lists every dataset's columns: the doc and the code cannot drift apart."""
    text = DATA_MD.read_text()
    for name, spec in CONTRACTS.items():
        assert f"`{name}`" in text, f"docs/DATA.md lacks the {name} contract"
        for col in spec:
            assert re.search(rf"`{re.escape(col.rstrip('?'))}`", text), f"docs/DATA.md lacks {name}.{col}"
