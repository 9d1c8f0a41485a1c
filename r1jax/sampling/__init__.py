"""On-device sampling with a KV cache: group sampling, multimodal prompts, learner inputs.

Public surface: `Sampler` (`__call__`, or `prefill` then `decode`), `SamplingControls`, `Prompt`,
`SampleOutput`, `learner_inputs`; `decode(..., keep_cache=True)` then `extend` continues rows
after an observation (multi-turn episodes).
"""
from r1jax.sampling.controls import SamplingControls  # noqa: F401
from r1jax.sampling.outputs import LearnerBatch, SampleOutput, learner_inputs  # noqa: F401
from r1jax.sampling.prompts import Prompt, PromptBatch, bucket_length  # noqa: F401
from r1jax.sampling.sampler import Continuation, Prefilled, Sampler  # noqa: F401
