"""Sampler on a tiny Qwen2.5 vs transformers' generate and vs a no-cache forward (fp32)."""
import logging

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from scipy.special import log_softmax, softmax

from r1jax import models, sharding
from r1jax.models.llm import CausalLM
from r1jax.sampling import Prompt, Sampler, SamplingControls, learner_inputs
from r1jax.sampling.sampler import decode_phases
from tests.sampling.helpers import CALLS, completion_log_probs, hf_greedy

MAX_NEW = 8
GROUP = 2
GREEDY = SamplingControls(max_new_tokens=MAX_NEW, greedy=True, stop_token_ids=())


def _run(text, prompts=None, controls=GREEDY, key=0, **kwargs):
  """Samples and returns (output, the (function, shape) calls the counting model recorded)."""
  CALLS.clear()
  out = text.sampler(text.params, text.prompts if prompts is None else prompts, key=jax.random.key(key),
                     num_samples=GROUP, controls=controls, **kwargs)
  jax.block_until_ready(out.tokens)
  jax.effects_barrier()
  return out, list(CALLS)


def _forward_logits(text, out):
  batch = learner_inputs(out)
  return batch, np.asarray(models.forward_logits(text.model, text.params, batch.input_ids, batch.attention_mask,
                                                 batch.positions))


@pytest.fixture(scope="module")
def greedy(text):
  return _run(text)


def test_greedy_matches_transformers_generate_on_left_padded_batch(text, greedy):
  out, _ = greedy
  hf_tokens, hf_log_probs = hf_greedy(text.reference, text.prompts, MAX_NEW)
  tokens = np.asarray(out.tokens).reshape(len(text.prompts), GROUP, MAX_NEW)
  logprobs = np.asarray(out.logprobs).reshape(len(text.prompts), GROUP, MAX_NEW)
  hf_token_log_probs = np.take_along_axis(hf_log_probs, hf_tokens[..., None], axis=-1)[..., 0]
  for g in range(GROUP):  # Greedy samples of one prompt are identical, and equal transformers'.
    np.testing.assert_array_equal(tokens[:, g], hf_tokens)
    np.testing.assert_allclose(logprobs[:, g], hf_token_log_probs, atol=1e-4, rtol=0)
  assert len({tuple(row) for row in hf_tokens}) > 1  # The prompts really lead to different completions.
  np.testing.assert_array_equal(out.lengths, MAX_NEW)
  assert not np.asarray(out.finished).any() and np.asarray(out.truncated).all()


def test_logprobs_and_greedy_tokens_equal_a_no_cache_forward(text, greedy):
  out, _ = greedy
  batch, logits = _forward_logits(text, out)
  length = batch.prompt_length
  tokens = np.asarray(out.tokens)
  np.testing.assert_allclose(out.logprobs, completion_log_probs(logits, length, tokens), atol=1e-4, rtol=0)
  np.testing.assert_array_equal(np.argmax(logits[:, length - 1:-1], axis=-1), tokens)
  # Positions are transformers' cumsum(mask) - 1 over prompt + completion.
  mask = np.asarray(batch.attention_mask)
  np.testing.assert_array_equal(np.asarray(batch.positions)[mask], (np.cumsum(mask, axis=1) - 1)[mask])
  np.testing.assert_array_equal(np.asarray(batch.completion_mask)[:, length:], True)
  np.testing.assert_array_equal(np.asarray(batch.completion_mask)[:, :length], False)


def test_prefill_runs_once_per_prompt_not_per_sample(text, greedy):
  out, calls = greedy
  rows = len(text.prompts) * GROUP
  prompt_length = out.prompts.length
  # The G samples of a prompt share its keys/values; each row caches only its own completion.
  cache = text.sampler.prefill(text.params, text.prompts, num_samples=GROUP, max_new_tokens=MAX_NEW).cache
  config = text.model.config.text
  assert cache["prefix_k"][0].shape == (len(text.prompts), config.num_kv_heads, prompt_length, config.head_dim)
  assert cache["k"][0].shape == (rows, MAX_NEW, config.num_kv_heads, config.head_dim)
  np.testing.assert_array_equal(cache["prefix_mask"], out.prompts.attention_mask)
  assert calls.count(("embed", (len(text.prompts), prompt_length))) == 1
  # Everything else is a one-token decode step over all B*G rows: max_new - 1 of them.
  assert sorted(calls) == sorted([("embed", (len(text.prompts), prompt_length))]
                                 + [("embed", (rows, 1))] * (MAX_NEW - 1))


def test_stop_token_ends_a_row_pads_the_rest_and_matches_transformers(text, greedy):
  tokens = np.asarray(greedy[0].tokens)
  # A token that prompt 0 first emits at step >= 2: its rows must stop right there.
  step = next(t for t in range(2, MAX_NEW) if tokens[0, t] not in tokens[0, :t])
  stop = int(tokens[0, step])
  out, _ = _run(text, controls=SamplingControls(max_new_tokens=MAX_NEW, greedy=True, stop_token_ids=(stop,)))
  hf_tokens, _ = hf_greedy(text.reference, text.prompts, MAX_NEW, eos_token_id=stop)
  np.testing.assert_array_equal(np.asarray(out.tokens)[::GROUP], hf_tokens)
  got, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for row in range(got.shape[0]):
    hits = np.flatnonzero(tokens[row] == stop)
    expected = hits[0] + 1 if hits.size else MAX_NEW
    assert lengths[row] == expected
    assert bool(out.finished[row]) == bool(hits.size) and bool(out.truncated[row]) == (not hits.size)
    np.testing.assert_array_equal(got[row, :expected], tokens[row, :expected])
    np.testing.assert_array_equal(got[row, expected:], out.pad_id)
    np.testing.assert_array_equal(np.asarray(out.logprobs)[row, expected:], 0.0)
  assert lengths[0] == step + 1

  # Per-prompt stop ids: only prompt 0's rows stop.
  per_prompt, _ = _run(text, stop_token_ids=[[stop], [], [], []])
  np.testing.assert_array_equal(per_prompt.lengths[:GROUP], step + 1)
  np.testing.assert_array_equal(per_prompt.tokens[GROUP:], tokens[GROUP:])


def test_group_samples_differ_are_reproducible_and_score_like_the_learner(text):
  controls = SamplingControls(max_new_tokens=MAX_NEW, temperature=1.0, stop_token_ids=())
  out, calls = _run(text, controls=controls, key=1)
  tokens = np.asarray(out.tokens).reshape(len(text.prompts), GROUP, MAX_NEW)
  for prompt in range(len(text.prompts)):
    assert len({tuple(row) for row in tokens[prompt]}) == GROUP
  assert calls.count(("embed", (len(text.prompts), out.prompts.length))) == 1  # One prefill for all samples.
  np.testing.assert_array_equal(_run(text, controls=controls, key=1)[0].tokens, out.tokens)
  assert not np.array_equal(_run(text, controls=controls, key=2)[0].tokens, out.tokens)

  # Temperature is a runtime value: log-probs are those of softmax(logits / T) over the full vocab.
  tempered = SamplingControls(max_new_tokens=MAX_NEW, temperature=0.7, stop_token_ids=())
  out, _ = _run(text, controls=tempered, key=3)
  batch, logits = _forward_logits(text, out)
  np.testing.assert_allclose(out.logprobs, completion_log_probs(logits, batch.prompt_length, out.tokens, 0.7),
                             atol=1e-4, rtol=0)


def test_forbidden_tokens_are_never_sampled(text):
  free, _ = _run(text, controls=SamplingControls(max_new_tokens=MAX_NEW, stop_token_ids=()), key=4)
  forbidden = tuple(sorted(set(np.asarray(free.tokens).ravel().tolist())))  # Everything it chose before.
  assert SamplingControls().resolved_forbidden_ids(text.model.config) == ()  # Text models forbid nothing.
  out, _ = _run(text, controls=SamplingControls(max_new_tokens=MAX_NEW, stop_token_ids=(),
                                                forbidden_token_ids=forbidden), key=4)
  assert not np.isin(np.asarray(out.tokens), forbidden).any()


def test_top_k_top_p_stay_in_the_allowed_set_and_entropy_matches(text):
  temperature, top_k, top_p = 1.3, 12, 0.8
  controls = SamplingControls(max_new_tokens=MAX_NEW, temperature=temperature, top_k=top_k, top_p=top_p,
                              stop_token_ids=(), return_entropy=True)
  out, _ = _run(text, controls=controls, key=5)
  batch, logits = _forward_logits(text, out)
  length = batch.prompt_length
  scaled = logits[:, length - 1:-1].astype(np.float64) / temperature
  tokens = np.asarray(out.tokens)
  for row, t in np.ndindex(tokens.shape):
    order = np.argsort(-scaled[row, t])[:top_k]
    probs = softmax(scaled[row, t, order])
    allowed = order[(np.cumsum(probs) - probs) < top_p]
    assert tokens[row, t] in allowed, (row, t)
  log_probs = log_softmax(scaled, axis=-1)
  np.testing.assert_allclose(out.entropy, -(np.exp(log_probs) * log_probs).sum(-1), atol=1e-4, rtol=0)
  np.testing.assert_allclose(out.logprobs, completion_log_probs(logits, length, tokens, temperature), atol=1e-4,
                             rtol=0)


def test_prompts_of_other_lengths_in_the_same_bucket_reuse_the_compiled_sampler(text, greedy):
  compiled = len(text.sampler.compile_events)
  rng = np.random.default_rng(1)
  prompts = [rng.integers(1, 96, n) for n in (9, 3, 16, 12)]
  prompts[1] = {"input_ids": prompts[1]}  # Mappings and Prompt objects are accepted too.
  prompts[2] = Prompt(prompts[2])
  out, _ = _run(text, prompts=prompts)
  assert len(text.sampler.compile_events) == compiled
  assert out.prompts.length == 16
  np.testing.assert_array_equal(out.prompts.lengths, [9, 3, 16, 12])


def test_sharded_greedy_equals_unsharded(text, greedy, caplog):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2, "sequence": 1})
  model = CausalLM(text.model.config)
  params = sharding.shard_params(text.params, mesh, model=model)
  sampler = Sampler(model, mesh=mesh)
  with caplog.at_level(logging.INFO, logger="r1jax.sampling"):
    out = sampler(params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=GREEDY)
  np.testing.assert_array_equal(out.tokens, greedy[0].tokens)
  np.testing.assert_allclose(out.logprobs, greedy[0].logprobs, atol=1e-5, rtol=0)
  assert out.tokens.sharding.spec[0] == ("data", "fsdp")  # Rows were really split over the batch axes.
  cache = sampler.prefill(params, text.prompts, num_samples=GROUP, max_new_tokens=MAX_NEW).cache
  expected = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))  # K/V heads over tensor.
  assert cache["k"][0].sharding.is_equivalent_to(expected, 4), cache["k"][0].sharding
  shared = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), "tensor", None, None))  # [prompts, kv_heads, P, dim]
  assert cache["prefix_k"][0].sharding.is_equivalent_to(shared, 4), cache["prefix_k"][0].sharding
  # 3 prompts x 3 samples: neither the prompts nor the rows split evenly over the 4 batch shards.
  uneven = SamplingControls(max_new_tokens=4, greedy=True, stop_token_ids=())
  alone = Sampler(model)(text.params, text.prompts[:3], key=jax.random.key(0), num_samples=3, controls=uneven)
  split = sampler(params, text.prompts[:3], key=jax.random.key(0), num_samples=3, controls=uneven)
  np.testing.assert_array_equal(split.tokens, alone.tokens)
  np.testing.assert_allclose(split.logprobs, alone.logprobs, atol=1e-5, rtol=0)
  messages = [r.getMessage() for r in caplog.records]
  assert any("compiled prefill" in m and "prompt_bucket=16" in m for m in messages)
  assert any("compiled decode" in m and f"rows={len(text.prompts) * GROUP}" in m for m in messages)


def test_scanned_layers_with_a_stacked_cache_give_the_same_completions(text, greedy):
  model, params = models.load_pretrained(text.path, scan_layers=True)
  out = Sampler(model)(params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=GREEDY)
  np.testing.assert_array_equal(out.tokens, greedy[0].tokens)
  np.testing.assert_allclose(out.logprobs, greedy[0].logprobs, atol=1e-5, rtol=0)


def test_decode_phases_split_a_long_budget_and_grow_the_cache():
  assert decode_phases(8, 4) == (8,)  # Too short to split.
  assert decode_phases(256, 4) == (64, 128, 192, 256)
  assert decode_phases(300, 4) == (80, 160, 240, 300)  # Rounded up to 16 slots.
  assert decode_phases(256, 1) == (256,)
  assert decode_phases(2048, 4) == (512, 1024, 1536, 2048)


def test_phased_decode_equals_one_phase_and_a_no_cache_forward(text):
  """A 192-token budget decodes in phases ending at 64, 128 and 192 completion slots."""
  long_new = 192
  controls = SamplingControls(max_new_tokens=long_new, greedy=True, stop_token_ids=())
  one_phase = Sampler(text.model, decode_phases=1)
  phased = Sampler(text.model, decode_phases=3)
  single = one_phase(text.params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=controls)
  out = phased(text.params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=controls)
  np.testing.assert_array_equal(out.tokens, single.tokens)
  np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-5, rtol=0)
  batch, logits = _forward_logits(text, out)
  np.testing.assert_allclose(out.logprobs, completion_log_probs(logits, batch.prompt_length, out.tokens), atol=1e-4,
                             rtol=0)
  # Three loops: each row's own cache starts with the first 64 completion slots, later loops grow it.
  cache = phased.prefill(text.params, text.prompts, num_samples=GROUP, max_new_tokens=long_new).cache
  assert cache["k"][0].shape[:2] == (len(text.prompts) * GROUP, 64)
  decode_text = [e for k, e in phased._executables.items() if k[0] == "decode"][0].as_text()
  assert decode_text.count(" while(") == 3

  # Rows that stop inside the first phase leave the later loops nothing to do.
  tokens = np.asarray(out.tokens)
  stop = int(tokens[0, 3])
  stopping = SamplingControls(max_new_tokens=long_new, greedy=True, stop_token_ids=(stop,))
  early = phased(text.params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=stopping)
  reference = one_phase(text.params, text.prompts, key=jax.random.key(0), num_samples=GROUP, controls=stopping)
  np.testing.assert_array_equal(early.tokens, reference.tokens)
  np.testing.assert_array_equal(early.lengths, reference.lengths)
  assert early.lengths[0] <= 4


def test_bad_inputs_name_the_problem(text):
  sampler, params, key = text.sampler, text.params, jax.random.key(0)
  with pytest.raises(ValueError, match="largest prompt bucket 16"):
    Sampler(text.model, buckets=(8, 16))(params, [list(range(1, 18))], key=key)
  with pytest.raises(ValueError, match="prompt 1 has token id 96 outside the vocabulary"):
    sampler(params, [[1, 2], [3, 96]], key=key)
  with pytest.raises(ValueError, match="prompt 0 has vision inputs but the model .* is text-only"):
    sampler(params, [Prompt([1, 2], pixel_values=np.zeros((4, 1176), np.float32), image_grid_thw=[[1, 2, 2]])],
            key=key)
  with pytest.raises(ValueError, match=r"stop_token_ids \[200\] are outside"):
    sampler(params, [[1]], key=key, controls=SamplingControls(stop_token_ids=(200,)))
  with pytest.raises(ValueError, match="stop_token_ids has 1 entries for 2 prompts"):
    sampler(params, [[1], [2]], key=key, stop_token_ids=[[3]])
  prefilled = sampler.prefill(params, text.prompts, num_samples=GROUP, max_new_tokens=MAX_NEW)
  with pytest.raises(ValueError, match=f"controls.max_new_tokens=4 differs from the max_new_tokens={MAX_NEW}"):
    sampler.decode(params, prefilled, key=key, controls=SamplingControls(max_new_tokens=4))
  with pytest.raises(ValueError, match=r"prompt has unknown key\(s\) \['pixels'\]"):
    sampler(params, [{"input_ids": [1], "pixels": None}], key=key)
  with pytest.raises(ValueError, match="decode_phases=0 must be >= 1"):
    Sampler(text.model, decode_phases=0)
  with pytest.raises(ValueError, match="num_samples=0"):
    sampler(params, [[1]], key=key, num_samples=0)
  with pytest.raises(ValueError, match="temperature=0"):
    SamplingControls(temperature=0)
  with pytest.raises(ValueError, match="top_p=0"):
    SamplingControls(top_p=0)

