"""Data contracts: the columns and types of every dataset, enforced by every reader.

``docs/DATA.md`` describes the same contracts for people; ``tests/core/test_contracts.py`` keeps the two in
step. A reader calls ``check_arrow_schema`` (pandas/pyarrow) or ``check_spark_schema`` (Spark) and gets a
``SchemaError`` naming the dataset, the column and what was expected.

Type names are logical: ``string``, ``int64``, ``int32``, ``float64``, ``float32``, ``bool``,
``timestamp``, ``date``, ``list<float32>``. A column ending in ``?`` may be absent (optional).
"""

from __future__ import annotations

from keyphrase_pipeline.core.errors import SchemaError

# dataset -> {column: logical type}
CONTRACTS: dict[str, dict[str, str]] = {
    # ---- inputs a platform provides ----
    "catalog": {
        "item_id": "int64",
        "title": "string",
        "category": "string",
        "updated_at": "timestamp",
        "active": "bool",
    },
    "keyphrases": {
        "keyphrase_id": "int64",
        "text": "string",
        "search_volume?": "int64",
    },
    "item_images": {  # optional input: one image vector per item (any fixed length), e.g. from a vision encoder
        "item_id": "int64",
        "image_embedding": "list<float32>",
    },
    "events": {
        "event_id": "string",
        "ts": "timestamp",
        "item_id": "int64",
        "keyphrase_id": "int64",
        "query?": "string",
        "event": "string",  # impression | click
        "position": "int32",
    },
    "sr_input": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "score": "float64",
        "label": "int32",
    },
    # ---- outputs ----
    "ctr_daily": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "impressions": "int64",
        "clicks": "int64",
    },
    "ctr_position_daily": {  # ctr_daily by the position the item was shown at (the CTR model's training rows)
        "item_id": "int64",
        "keyphrase_id": "int64",
        "position": "int32",
        "impressions": "int64",
        "clicks": "int64",
    },
    "ctr_labels": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "impressions": "int64",
        "clicks": "int64",
        "ctr": "float64",
        "label": "int32",
    },
    "sr_labels": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "score": "float64",
        "label": "int32",
    },
    "pairs": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "title": "string",
        "category": "string",
        "keyphrase": "string",
        "source": "string",  # ctr_positive | unexposed_topk | hard_negative | random
        "pair_key": "string",  # sha1 of (title, category, keyphrase, judge model, prompt version)
        "shard": "int32",
    },
    "llm_labels": {
        "item_id": "int64",
        "keyphrase_id": "int64",
        "text_hash": "string",  # sha1 of (title, category, keyphrase)
        "pair_key": "string",
        "title": "string",
        "category": "string",
        "keyphrase": "string",
        "source": "string",
        "p_yes": "float64",
        "label": "int32",
        "judge": "string",  # backend: simulated | transformers | openai | vllm
        "judge_model": "string",
        "prompt_version": "string",
        "labelled_at": "timestamp",
    },
    "label_reviews": {
        "review_id": "string",  # uuid4 hex, also the file name
        "reviewed_at": "timestamp",  # UTC
        "reviewer": "string",  # the Airflow user name
        "store_ds": "string",  # the label store day of the reviewed pair
        "pair_key": "string",
        "item_id": "int64",
        "keyphrase_id": "int64",
        "judge": "string",
        "judge_model": "string",
        "prompt_version": "string",
        "llm_label": "int32",  # the judge's label the reviewer saw
        "p_yes": "float64",
        "verdict": "string",  # agree | disagree
    },
    "embeddings": {
        "id": "int64",
        "text_hash": "string",
        "embedding": "list<float32>",
        "model_version": "string",
    },
    "recommendations": {
        "item_id": "int64",
        "rank": "int32",
        "keyphrase_id": "int64",
        "keyphrase": "string",
        "score": "float32",
        "expected_ctr?": "float32",  # the CTR model's P(click) at its reference position; null without one
        "ctr_model_version?": "string",
        "rerank_score?": "float32",  # the re-ranking cross-encoder's P(relevant) (serve.rerank_depth); null without
        "rerank_cross_version?": "string",  # the cross-encoder that gave rerank_score
    },
    "quarantine": {
        "reason": "string",
    },
}


def columns(contract: str, include_optional: bool = True) -> list[str]:
    """Column names of ``contract`` in contract order, ``?`` stripped; optional ones only with ``include_optional``.

    Raises KeyError for an unknown contract name."""
    return [c.rstrip("?") for c in CONTRACTS[contract] if include_optional or not c.endswith("?")]


def _arrow_ok(logical: str, t) -> bool:
    import pyarrow as pa

    if pa.types.is_null(t):  # an all-null (e.g. empty object) column carries no type to contradict
        return True
    if logical == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if logical in ("int64", "int32"):
        return pa.types.is_integer(t)
    if logical in ("float64", "float32"):
        return pa.types.is_floating(t)
    if logical == "bool":
        return pa.types.is_boolean(t)
    if logical == "timestamp":
        return pa.types.is_timestamp(t)
    if logical == "date":
        return pa.types.is_date(t)
    if logical.startswith("list<"):
        return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and pa.types.is_floating(t.value_type)
    raise ValueError(logical)


def check_arrow_schema(schema, contract: str, where: str = "") -> None:
    """Raise SchemaError if a pyarrow schema misses a required column or has a wrong type.

    Extra columns are allowed; an all-null column passes any type. ``where`` (a path or a label) goes into
    the message. Raises SchemaError (a DataError: ``kp`` exit 3), KeyError for an unknown contract name."""
    _check({f.name: f.type for f in schema}, contract, where, _arrow_ok)


def check_pandas(df, contract: str, where: str = "") -> None:
    """``check_arrow_schema`` on a pandas DataFrame's inferred Arrow schema (the index is ignored).

    Object columns holding str infer as ``string``; an all-None column passes any type. Raises SchemaError
    (``kp`` exit 3); pyarrow's ArrowInvalid/ArrowTypeError when a column's values have mixed types."""
    import pyarrow as pa

    check_arrow_schema(pa.Schema.from_pandas(df, preserve_index=False), contract, where)


def _spark_ok(logical: str, t) -> bool:
    name = t.typeName()
    if logical == "string":
        return name == "string"
    if logical in ("int64", "int32"):
        return name in ("long", "integer", "short", "byte")
    if logical in ("float64", "float32"):
        return name in ("double", "float")
    if logical == "bool":
        return name == "boolean"
    if logical == "timestamp":
        return name in ("timestamp", "timestamp_ntz")
    if logical == "date":
        return name == "date"
    if logical.startswith("list<"):
        return name == "array" and t.elementType.typeName() in ("double", "float")
    raise ValueError(logical)


def check_spark_schema(schema, contract: str, where: str = "") -> None:
    """Raise SchemaError (``kp`` exit 3) if a Spark StructType misses a required column or has a wrong type.

    Any Spark integer width passes ``int64``/``int32``, float or double passes either float type; extra
    columns are allowed. KeyError for an unknown contract name."""
    _check({f.name: f.dataType for f in schema.fields}, contract, where, _spark_ok)


def _check(actual: dict, contract: str, where: str, ok) -> None:
    spec = CONTRACTS[contract]
    loc = f" at {where}" if where else ""
    for col, logical in spec.items():
        optional = col.endswith("?")
        name = col.rstrip("?")
        if name not in actual:
            if optional:
                continue
            raise SchemaError(f"{contract}{loc}: missing column {name!r} (expected {logical}); has {sorted(actual)}")
        if not ok(logical, actual[name]):
            raise SchemaError(f"{contract}{loc}: column {name!r} has type {actual[name]}, expected {logical}")


def spark_schema(contract: str):
    """The contract as a Spark StructType (for reading CSV/JSON inputs or creating empty frames)."""
    from pyspark.sql import types as T

    mapping = {
        "string": T.StringType(),
        "int64": T.LongType(),
        "int32": T.IntegerType(),
        "float64": T.DoubleType(),
        "float32": T.FloatType(),
        "bool": T.BooleanType(),
        "timestamp": T.TimestampType(),
        "date": T.DateType(),
        "list<float32>": T.ArrayType(T.FloatType()),
    }
    return T.StructType([
        T.StructField(c.rstrip("?"), mapping[t], nullable=True) for c, t in CONTRACTS[contract].items()
    ])


def arrow_schema(contract: str, include_optional: bool = True):
    """The contract as a ``pyarrow.Schema``, columns in contract order (for writing parquet with exact types).

    Physical types: int64, int32, float64, float32, bool, ``timestamp[us]`` (naive), ``date32``,
    ``list<float32>``, string. Raises KeyError for an unknown contract name."""
    import pyarrow as pa

    mapping = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),
        "date": pa.date32(),
        "list<float32>": pa.list_(pa.float32()),
    }
    return pa.schema([
        pa.field(c.rstrip("?"), mapping[t]) for c, t in CONTRACTS[contract].items()
        if include_optional or not c.endswith("?")
    ])
