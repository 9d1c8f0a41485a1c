"""JAX sentence encoder vs transformers' PyTorch BertModel + mean pooling + L2 normalisation."""
import json
from concurrent import futures

import numpy as np
import pytest
import torch
import transformers

from r1jax.models import text_encoder
from r1jax.rewards import judges

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "rug", "market", "fell", "##s", "##ing", "run", ".", ","]
TEXTS = ["The cat sat on the mat.", "A dog", "cats running on a rug, the dog sat.", "", "markets fell",
         "the cat " * 40]  # the last one is truncated at max_position_embeddings


def _tiny_bert(path, *, hidden_act="gelu", prefixed=False, seed=0):
  """Saves a random BERT + vocab.txt to `path`; returns the (eval, fp32) torch BertModel.

  `prefixed` saves a BertForMaskedLM, whose tensor names start with "bert." and which has no pooler.
  """
  torch.manual_seed(seed)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
  config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=40, hidden_act=hidden_act,
                                   initializer_range=0.3)  # O(1) activations, where erf vs tanh gelu shows
  model = (transformers.BertForMaskedLM if prefixed else transformers.BertModel)(config).eval()
  # Random init has unit norms and zero biases: perturb them so they are really tested.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "LayerNorm" in name or name.endswith(".bias"):
        p.add_(torch.randn_like(p) * 0.1)
  model.save_pretrained(path)
  (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  return model.bert if prefixed else model


def _reference(model, path, texts, max_length):
  """sentence-transformers' computation in torch: (ids, mask, token states, unit-norm mean embeddings)."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
  with torch.no_grad():
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  return (batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool), states.numpy(),
          torch.nn.functional.normalize(mean, dim=-1).numpy())


@pytest.mark.parametrize("hidden_act, prefixed", [("gelu", False), ("gelu_new", True)])
def test_embeddings_match_transformers(tmp_path, hidden_act, prefixed):
  ids, mask, states, embeddings = _reference(_tiny_bert(tmp_path, hidden_act=hidden_act, prefixed=prefixed),
                                             tmp_path, TEXTS, 40)
  encoder = text_encoder.SentenceEncoder.load(tmp_path, batch_size=4)  # 6 texts: two forward passes
  assert encoder.max_length == 40
  ours = encoder.embed(TEXTS)
  assert ours.shape == (len(TEXTS), 32) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, embeddings, atol=1e-4, rtol=0)
  # Token states too: O(1) values, where a wrong activation or norm shows more than in the pooled mean.
  params = text_encoder.load_params(str(tmp_path), encoder.config)
  our_states = np.asarray(text_encoder.BertEncoder(encoder.config).apply(params, ids, mask))
  np.testing.assert_allclose(our_states[mask], states[mask], atol=1e-4, rtol=0)


def test_padding_buckets_bound_compiles_and_keep_rows_independent(tmp_path):
  _tiny_bert(tmp_path)
  encoder = text_encoder.SentenceEncoder.load(tmp_path, batch_size=8)
  together = encoder.embed(TEXTS[:5])
  alone = np.concatenate([encoder.embed([t]) for t in TEXTS[:5]])
  np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)
  # All short: 1..4 texts pad to batch buckets 1, 2, 4 at the length bucket 16 -> 3 programs for 4 calls.
  before = text_encoder.encode._cache_size()
  for n in (1, 2, 3, 4):
    encoder.embed(["the cat sat"] * n)
  assert text_encoder.encode._cache_size() - before <= 3


def test_threads_share_one_encoder(tmp_path):
  """The reward scorer's worker threads call one encoder at once; each gets its own texts' rows."""
  _tiny_bert(tmp_path)
  encoder = text_encoder.SentenceEncoder.load(tmp_path)
  batches = [TEXTS[i:] + TEXTS[:i] for i in range(len(TEXTS))]
  with futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(encoder.embed, batches * 3))
  for batch, result in zip(batches * 3, results):
    np.testing.assert_allclose(result, encoder.embed(batch), atol=1e-6, rtol=0)


def test_sentence_bert_config_sets_length_and_lower_case(tmp_path):
  model = _tiny_bert(tmp_path)
  (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8, "do_lower_case": True}))
  encoder = text_encoder.SentenceEncoder.load(tmp_path)
  assert encoder.max_length == 8
  texts = ["THE CAT SAT ON THE MAT AND THE DOG SAT"]
  np.testing.assert_allclose(encoder.embed(texts), _reference(model, tmp_path, [t.lower() for t in texts], 8)[-1],
                             atol=1e-4, rtol=0)


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    text_encoder.SentenceEncoder.load(tmp_path / "nope")
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"lacks \*\.safetensors, tokenizer\.json or vocab\.txt"):
    text_encoder.SentenceEncoder.load(tmp_path)


def test_unsupported_models_are_refused_with_the_field(tmp_path):
  _tiny_bert(tmp_path)
  hf = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**hf, "position_embedding_type": "relative_key"}))
  with pytest.raises(ValueError, match="config.json: position_embedding_type 'relative_key'"):
    text_encoder.SentenceEncoder.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(hf))
  (tmp_path / "1_Pooling").mkdir()
  (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                   "pooling_mode_mean_tokens": False}))
  with pytest.raises(ValueError, match="pooling_mode_cls_token"):
    text_encoder.SentenceEncoder.load(tmp_path)


def test_wrong_checkpoint_shape_is_named(tmp_path):
  _tiny_bert(tmp_path)
  hf = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**hf, "intermediate_size": 64}))
  with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.weight.*\(48, 32\).*\(32, 64\)"):
    text_encoder.SentenceEncoder.load(tmp_path)


def test_packaged_minilm_matches_transformers():
  """The real all-MiniLM-L6-v2 weights and tokenizer.json (README's test command installs them)."""
  path = judges.packaged_minilm_dir()
  encoder = text_encoder.SentenceEncoder.load(path)
  assert (encoder.max_length, encoder.dim) == (256, 384)  # sentence_bert_config.json, not the tokenizer's 512
  texts = ["A cat sits on the mat.", "Stock markets fell sharply today.", "Übermäßig «zitiert» — text " * 80]
  ref = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
  np.testing.assert_allclose(encoder.embed(texts), _reference(ref, path, texts, 256)[-1], atol=1e-5, rtol=0)
