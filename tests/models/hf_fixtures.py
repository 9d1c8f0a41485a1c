"""Tiny random transformers models saved with `save_pretrained`: the parity references."""
from __future__ import annotations

import numpy as np
import torch
import transformers


def tiny_qwen2(path, *, hidden=32, heads=4, kv_heads=2, layers=2, inter=48, vocab=96, tied=False,
               rope_theta=10000.0, seed=0):
  """Saves a random Qwen2ForCausalLM to `path` and returns the (eval-mode, fp32) torch model."""
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tied,
      rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, rms_norm_eps=1e-6)
  model = transformers.Qwen2ForCausalLM(config).eval()
  # Random init is N(0, 0.02): make norms and biases non-trivial so they are really tested.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or name.endswith(".bias"):
        p.add_(torch.randn_like(p) * 0.1)
  model.save_pretrained(path)
  return model


def torch_logits(model, input_ids, attention_mask=None, **kwargs) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(np.asarray(input_ids), dtype=torch.long),
                attention_mask=None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)),
                **kwargs)
  return out.logits.float().numpy()
