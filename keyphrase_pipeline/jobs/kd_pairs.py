"""Extra pairs for distillation: unjudged (item, keyphrase) pairs the cross-encoder scores for the student.

Judged pairs alone give the student the same targets twice: the assistant's scores on its own training
pairs are close to the labels it memorised. Its value as a teacher is on pairs nobody judged, where it
generalises and the student would not (Augmented SBERT: Thakur et al., NAACL 2021, "Augmented SBERT: Data
Augmentation Method for Improving Bi-Encoders for Pairwise Sentence Scoring Tasks", which found
semantic-search sampling of the pairs to label the strongest choice). The pairs here are "ours": the
paper does not say which pairs its assistant scores.

Sampling: every train item is paired with its nearest train keyphrases under the start encoder (cosine,
full dimension), skipping pairs already judged or in the held-out split, until ``ratio`` x (train
pairs) extra pairs are drawn. Hard pairs, close to the decision boundary, carry the most information.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def nearest_keyphrases(item_emb: np.ndarray, keyphrase_emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of each item's ``k`` most similar keyphrases (inner product), best first: exact FAISS search
    (``models.ann.build_index`` with factory ``Flat``, as the recall gate's ground truth).

    Args:
        item_emb: ``(n_items, d)`` float32, rows L2-normalised.
        keyphrase_emb: ``(n_keyphrases, d)`` float32, rows L2-normalised.
        k: neighbours per item (clipped to ``n_keyphrases``).
    Returns:
        ``(n_items, k)`` int64.
    """
    from keyphrase_pipeline.models.ann import build_index

    k = min(k, keyphrase_emb.shape[0])
    index = build_index(keyphrase_emb, np.arange(len(keyphrase_emb), dtype=np.int64), "Flat")
    _, nn = index.search(np.ascontiguousarray(item_emb, dtype=np.float32), k)
    return nn.astype(np.int64)


def sample_pairs(encoder, train, exclude_hashes, ratio: float, seed: int = 42):
    """Unjudged (title, category, keyphrase) pairs near the decision boundary, for the teacher to score.

    Args:
        encoder: a SentenceTransformer (the student's start model) used to find neighbours.
        train: frame of judged train pairs (``title, category, keyphrase, text_hash``).
        exclude_hashes: text_hashes never to emit (the held-out split; judged train pairs are always skipped).
        ratio: extra pairs per judged train pair; 0 returns an empty frame.
        seed: ties broken and the final cut drawn with this seed.
    Returns:
        pandas DataFrame ``title, category, keyphrase, text_hash``, at most ``round(ratio * len(train))`` rows,
        no pair twice.
    """
    import pandas as pd

    from keyphrase_pipeline.jobs.label_store import text_hash
    from keyphrase_pipeline.models.bi_encoder import encode_items, encode_keyphrases

    cols = ["title", "category", "keyphrase", "text_hash"]
    want = int(round(ratio * len(train)))
    if want <= 0 or train.empty:
        return pd.DataFrame(columns=cols)
    items = train[["title", "category"]].drop_duplicates().reset_index(drop=True)
    keyphrases = train["keyphrase"].drop_duplicates().reset_index(drop=True)
    per_item = min(len(keyphrases), math.ceil(want / len(items)) + int(train.groupby(["title", "category"]).size().max()))
    item_emb = encode_items(encoder, items["title"].tolist(), items["category"].tolist())
    keyphrase_emb = encode_keyphrases(encoder, keyphrases.tolist())
    nn = nearest_keyphrases(item_emb, keyphrase_emb, per_item)
    skip = set(train["text_hash"]) | set(exclude_hashes)
    rows, per = [], math.ceil(want / len(items))
    for i, (title, cat) in enumerate(zip(items["title"], items["category"])):
        taken = 0
        for j in nn[i]:
            keyphrase = keyphrases[j]
            h = text_hash(title, cat, keyphrase)
            if h in skip:
                continue
            skip.add(h)
            rows.append((title, cat, keyphrase, h))
            taken += 1
            if taken >= per:
                break
    out = pd.DataFrame(rows, columns=cols)
    if len(out) > want:
        out = out.sample(n=want, random_state=seed).reset_index(drop=True)
    log.info("distillation pairs: %d unjudged pair(s) near %d item(s) (ratio %.2f of %d judged train pairs)",
             len(out), len(items), ratio, len(train))
    return out
