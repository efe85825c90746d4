"""Tiny randomly initialised encoders built from a config, for tests and quick runs (no download).

They use the real all-MiniLM-L6-v2 WordPiece tokenizer, so text handling is the production one; only
the network is small (2 layers, hidden 32) and random.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from keyphrase_pipeline.models.base import default_encoder_path


def build_tiny_encoder(out_dir: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> str:
    """Write a sentence-transformers model (BERT + mean pooling + normalise) to ``out_dir``; return its path."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_models
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = Path(out_dir)
    hf_dir = out / "_hf"
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    transformer = st_models.Transformer(str(hf_dir), max_seq_length=32)
    pooling = st_models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu")
    model.save(str(out))

    shutil.rmtree(hf_dir, ignore_errors=True)
    return str(out)
