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


def tiny_qwen2_5_vl(path, *, vocab=96, hidden=64, heads=4, kv_heads=2, layers=2, inter=96, mrope_section=(2, 3, 3),
                    tied=False, vision_depth=3, vision_hidden=32, vision_heads=2, vision_inter=48, patch_size=14,
                    window_size=56, fullatt_block_indexes=(1,), tokens_per_second=2, image_token_id=None,
                    video_token_id=None, vision_start_token_id=None, vision_end_token_id=None, seed=0):
  """Saves a random Qwen2_5_VLForConditionalGeneration to `path`; returns the (eval, fp32) torch model.

  Special token ids default to the last ids of the tiny vocabulary. window_size=56 with patch 14
  gives windows of 2x2 merged tokens, so small images already have several (and partial) windows.
  """
  torch.manual_seed(seed)
  ids = dict(image_token_id=vocab - 3 if image_token_id is None else image_token_id,
             video_token_id=vocab - 2 if video_token_id is None else video_token_id,
             vision_start_token_id=vocab - 5 if vision_start_token_id is None else vision_start_token_id,
             vision_end_token_id=vocab - 4 if vision_end_token_id is None else vision_end_token_id)
  config = transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-6,
                       bos_token_id=0, eos_token_id=1, pad_token_id=0, tie_word_embeddings=tied,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": list(mrope_section)}),
      vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_inter,
                         num_heads=vision_heads, out_hidden_size=hidden, patch_size=patch_size,
                         window_size=window_size, fullatt_block_indexes=list(fullatt_block_indexes),
                         tokens_per_second=tokens_per_second),
      tie_word_embeddings=tied, **ids)
  model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
  # N(0, 0.02) would leave tiny vision features that barely move the logits; fan-in scaling keeps
  # activations O(1) so every part of the model (and the M-RoPE positions) shows in the logits.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim >= 2:
        p.normal_(0.0, p[0].numel() ** -0.5)
      elif name.endswith("norm.weight") or name.endswith("ln_q.weight") or name.endswith(".bias"):
        p.add_(torch.randn_like(p) * 0.1)
  model.save_pretrained(path)
  return model


def mm_token_type_ids(model, input_ids) -> np.ndarray:
  """transformers' modality ids (0 text, 1 image, 2 video), which its get_rope_index needs."""
  ids = np.asarray(input_ids)
  return (ids == model.config.image_token_id) * 1 + (ids == model.config.video_token_id) * 2
