"""Grain data pipelines for r1jax: records, images, video frames and multi-view 3D scenes.

Trainer interface
-----------------
    it = data_pipelines.make_prompt_iterator(config, tokenizer, vision_cfg)   # RL (GRPO)
    it = data_pipelines.make_sft_iterator(config, tokenizer, vision_cfg)      # SFT
    batch = next(it)
    state = it.get_state()   # JSON-serialisable; save it with the train state
    it.set_state(state)      # on resume: the following batches are the ones that would have come
    it.close()               # stops worker processes

`config.data` (see `default_config()` for every key) names a registered dataset
(`register_dataset` / `get_dataset`) and the batching, sharding and media options. Each host
reads its own shard (`jax.process_index()` of `jax.process_count()`, or explicit
`shard_index` / `shard_count`) and yields `config.data.batch_size / process_count` prompts per
batch. The group expansion of GRPO (G completions per prompt) is the sampler's job.

An RL batch (B prompts, L a bucket from `config.data.length_buckets`) is a dict:
    input_ids           int32 [B, L]  LEFT-padded with the tokenizer's pad id; the vision
                                      placeholders are already expanded (one token per merged
                                      patch) and never truncated
    attention_mask      int32 [B, L]  1 on prompt tokens
    prompt_lengths      int32 [B]
    pixel_values        float32 [num_image_patches, 3 * temporal_patch * patch**2]
    image_grid_thw      int32 [num_images, 3]
    image_counts        int32 [B]     images per row; rows' images are consecutive, in order
    pixel_values_videos float32 [num_video_patches, patch_dim]
    video_grid_thw      int32 [num_videos, 3]
    second_per_grid_ts  float32 [num_videos]  seconds per temporal patch (from actual frame
                                      times), for M-RoPE's time axis
    video_counts        int32 [B]
    example_id          list[str]
    messages            list[chat]    the chat rendered into input_ids (media as placeholders)
    ground_truth        list[dict]    the record's own fields for the reward; always 'answer'
    reward_context      list[dict]    'id', 'where' (file:row), 'data_type',
                                      'original_image_sizes' / 'resized_image_sizes' [(h, w)]
                                      (rescale predicted coordinates with these),
                                      'video_durations' [s], 'video_timestamps' [[s]],
                                      'video_original_sizes' / 'video_resized_sizes' [(h, w)],
                                      plus dataset extras (3D scenes: 'view_indices',
                                      'camera_to_world' [k, 4, 4], 'intrinsics' [3, 3])
    data_stats          dict[str, int] cumulative on this host: 'examples', 'skipped_<reason>'
An SFT batch has input_ids RIGHT-padded, 'loss_mask' int32 [B, L] (1 on response tokens) and
'sequence_lengths' instead of 'prompt_lengths'.

Bad data (missing/corrupt media, records without required fields, inconsistent tags) is
skipped and counted by reason with a rate-limited warning naming the file/record;
`config.data.strict=True` raises instead. Prompts longer than `max_prompt_length` (text plus
vision tokens) are dropped and counted, never cut. The skip happens inside the pipeline
without changing which record comes next, so batches stay deterministic and resumable.

Media helpers for rollout-time prompts (e.g. LOVE-R1's second step, which zooms into the
interval the model asked for): `video.sample_video(path, VideoSampling, start=, end=)`,
`video.sample_two_resolution(path, (t1, t2))` + `video.two_resolution_messages(...)`, then
`r1jax.processing.encode_prompt(..., video_fps=[clip.sample_fps, ...])`.

Modules: sources (JSON/JSONL/Parquet), records (layouts → Example), images, video (PyAV
sampling, seeking, overlays, two-resolution), scenes (3D views), transforms (per-record
encode), batching (buckets, padding, the batching stage), pipeline (the grain graph),
config / registry / datasets (named datasets configured by `config.data`).
"""
from data_pipelines.config import DataConfig, default_config, from_config  # noqa: F401
from data_pipelines.errors import BadExampleError, Skipped  # noqa: F401
from data_pipelines.pipeline import make_prompt_iterator, make_sft_iterator  # noqa: F401
from data_pipelines.records import Example, VideoRef  # noqa: F401
from data_pipelines.registry import (DatasetSpec, dataset_options, get_dataset,  # noqa: F401
                                     names, register_dataset)
