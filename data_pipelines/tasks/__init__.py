"""Synthetic tasks generated on the fly, registered as datasets when this package is imported.

* 'star_tvr' (tvr.py, tvr_dataset.py): STAR-R1-style transformation reasoning over pairs of
  rendered scenes, in-view and cross-view, with fixed held-out splits.
* 'letters' (letters.py): a text-only sanity task for the learner.
* 'love_r1' (love_r1.py, love_r1_dataset.py): LOVE-R1's released JSON records (long-video QA
  with zoom-in), read for RL (step-1 prompts) or SFT (one example per CoT step);
  love_r1_synthetic.py writes a synthetic long-video task in that layout.
* 'xiangqi_r1' (xiangqi_r1.py, xiangqi_r1_dataset.py): Xiangqi-R1 position records (FEN + engine
  labels) as stage-1 legal-move SFT, stage-2 strategy SFT or GRPO prompts; generated and labelled
  by Fairy-Stockfish (or the built-in searcher) when synthetic.
* 'satori_r1' (satori_r1.py, satori_r1_dataset.py): SATORI-R1's VQA-Verify records;
  satori_r1_synthetic.py writes a synthetic "shape inside the ring" task in that layout.
* 'embodied_r1' (embodied_r1.py, embodied_r1_dataset.py): Embodied-Points-200K Parquet rows
  (pointing, free space, visual traces, spatial QA), or the synthetic tabletop task of
  embodied_r1_synthetic.py in the same row layout.
* 'infigui_r1' (infigui_r1.py, infigui_r1_dataset.py): AndroidControl episodes (one example per
  step) and ScreenSpot rows; infigui_r1_synthetic.py writes a synthetic GUI world in that layout.
* 'three_d_r1' (three_d_r1.py, three_d_r1_dataset.py): ScanQA / ScanRefer / Scene-30K records over
  point-cloud scenes, rendered into views chosen by 3D-R1's view selector; three_d_r1_synthetic.py
  writes synthetic rooms of coloured boxes in those layouts.
* 'longvila_r1' (longvila_r1.py, longvila_r1_dataset.py): LongVideo-Reason records (one long video,
  a multiple-choice problem, `<answer>X</answer>`) sampled as `nframes` uniform frames;
  longvila_r1_synthetic.py writes a two-flashes-far-apart task in that layout.
"""
from data_pipelines.tasks import embodied_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import infigui_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import letters, love_r1_dataset, satori_r1_dataset, tvr_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import longvila_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import omni_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import three_d_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks import xiangqi_r1_dataset  # noqa: F401  (registers)
from data_pipelines.tasks.tvr import TvrTask, generate_example, text_corpus  # noqa: F401
from data_pipelines.tasks.tvr_dataset import TvrSource, write_split  # noqa: F401
