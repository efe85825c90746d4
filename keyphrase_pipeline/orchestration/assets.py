"""The lake's datasets as Airflow Assets: a stable ``kp://lake/<name>`` naming (the lake root differs per
deployment, the asset graph should not). ``extra.dataset`` is the ``Lake`` dataset name, so a consumer can
resolve the real path. A stage's ``outlets`` in the stage table (``keyphrase_pipeline.stages.STAGES``) name
these assets."""

from __future__ import annotations

#: asset name -> the Lake dataset that holds it
ASSET_DATASETS = {
    "ctr_labels": "ctr_labels",
    "pairs": "pairs",
    "llm_store": "llm_store",
    "cross_encoder": "registry",
    "bi_encoder": "registry",
    "champion": "registry",
    "onnx_towers": "registry",
    "item_embeddings": "embeddings",
    "keyphrase_embeddings": "embeddings",
    "keyphrase_index": "embeddings",
    "ctr_model": "registry",
    "recommendations": "recommendations",
    "serving": "serving",
}


def asset(name: str):
    """The Airflow Asset for one of the lake's datasets (``kp://lake/<name>``)."""
    from airflow.sdk import Asset

    if name not in ASSET_DATASETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSET_DATASETS)}")
    return Asset(name=f"kp.{name}", uri=f"kp://lake/{name}", group="keyphrase-lake",
                 extra={"dataset": ASSET_DATASETS[name]})
