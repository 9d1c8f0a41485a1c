"""InfiGUI-R1's error-recovery scenario construction, as a data step on the synthetic GUI world.

The paper samples the policy several times on each step of the training trajectories; a step whose
success rate is strictly between 0 and 1 is prone to error. From each such step it builds

* an Error Escape sample: the screen after the policy's wrong action, the target being the action
  that undoes it (here: Back when the wrong action opened another screen; the same tap again when it
  flipped a switch);
* a Back-on-Track sample: the screen after that recovery, the target being the step's original action;

and adds them to the RL data. Here (`construct`): K completions per training step from `policy`,
success = the infigui reward's `param` (type and parameters right); for a prone step the most
frequent wrong action that parses is replayed in the world's state machine from the state before the
step (the episodes are regenerated from their seeds, so the screens are exact). A wrong action with
no recovery in the world (typing the wrong text, a tap on nothing, a tool call that does not parse)
yields no sample, and is counted by reason.

Written to `out_dir`:
  recovery_stats.jsonl  one row per step: episode_id, step, action_type, successes, samples, rate, prone
  recovery.jsonl        the new samples as one-step episodes in the world's AndroidControl fields
                        (goal, screenshots, actions, step_instructions, teacher_responses, ...) plus
                        `recovery` ('error_escape' | 'back_on_track'): infigui_r1.py reads them like
                        any episode, so `config.data.path=<train.jsonl>,<out_dir>/recovery.jsonl` adds
                        them to the RL data
  recovery_summary.json counts: steps, prone, error_escape, back_on_track, no_recovery by reason

`python -m data_pipelines.tasks.infigui_r1_recovery --checkpoint=<HF export> --workdir=<run workdir>`
runs a trained policy (e.g. <workdir>/sft/hf) on the training split the run wrote under
<workdir>/data (episodes from the config's seed) and writes <workdir>/recovery/.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from data_pipelines.tasks import infigui_r1, infigui_r1_synthetic as world, tvr

DEFAULT_SAMPLES = 8
# policy(step examples, k) -> k completions per example.
Policy = Callable[[Sequence[Any], int], Sequence[Sequence[str]]]


def completion_action(completion: str) -> dict[str, Any] | None:
  """The AndroidControl action a completion's `mobile_use` call stands for (None if it does not parse)."""
  from r1jax.rewards import infigui  # pylint: disable=g-import-not-at-top
  match = infigui._STRUCTURE.fullmatch(completion or "")  # pylint: disable=protected-access
  if not match:
    return None
  arguments = infigui._tool_arguments(match.group(2) or match.group(3))  # pylint: disable=protected-access
  kind = arguments.get("action") if arguments else None
  point = infigui._point(arguments.get("coordinate")) if arguments else None  # pylint: disable=protected-access
  if kind in ("click", "long_press") and point is not None:
    return {"action_type": kind, "x": int(round(point[0])), "y": int(round(point[1]))}
  text = arguments.get("text") if arguments else None
  if kind in ("type", "open") and isinstance(text, str) and text:
    return {"action_type": "input_text", "text": text} if kind == "type" else {"action_type": "open_app", "app_name": text}
  if kind == "swipe" and arguments.get("direction") in ("up", "down", "left", "right"):
    return {"action_type": "scroll", "direction": arguments["direction"]}
  if kind == "system_button" and str(arguments.get("button", "")).lower() in ("back", "home"):
    return {"action_type": "navigate_back" if arguments["button"].lower() == "back" else "navigate_home"}
  return {"action_type": "wait"} if kind == "wait" else None


def recovery_action(phone: world.Phone, wrong: dict[str, Any], task: world.GuiTask) -> tuple[dict | None, str]:
  """(the action undoing `wrong` from `phone`'s state, "") or (None, why there is none)."""
  after = copy.deepcopy(phone)
  after.act(wrong, task)
  if np.array_equal(world.render(after, task), world.render(phone, task)):
    return None, "wrong action changed nothing"
  if [s.title for s in after.stack] != [s.title for s in phone.stack]:
    return {"action_type": "navigate_back"}, ""
  if wrong["action_type"] in ("click", "long_press"):
    flipped = [w for w in after.visible() if w.kind == "toggle" and
               w.on != next(v.on for v in phone.visible() if v.label == w.label)]
    if flipped:
      x, y = flipped[0].center(task)
      return {"action_type": "click", "x": x, "y": y}, ""
  return None, f"no recovery in the world for a wrong {wrong['action_type']}"


def _wrong_action(completions: Sequence[str], successes: Sequence[bool]) -> dict[str, Any] | None:
  """The most frequent parseable action among the failed completions."""
  actions = [completion_action(c) for c, ok in zip(completions, successes) if not ok]
  counts = collections.Counter(json.dumps(a, sort_keys=True) for a in actions if a is not None)
  return json.loads(counts.most_common(1)[0][0]) if counts else None


def _sample(episode, step, screens: list[np.ndarray], action: dict[str, Any], subgoal: str, kind: str,
            names: list[str], episode_id: Any, task: world.GuiTask) -> dict[str, Any]:
  record = world.episode_record(
      world.Episode(episode.template, episode.goal, [world.Step(episode.steps[step].instruction, action, subgoal)],
                    screens, [[], []], episode.key),
      names, task, episode_id=episode_id, responses=[world.response(subgoal, action)])
  record.update(recovery=kind, source_step=step)
  return record


def construct(episodes: Sequence[world.Episode], examples: Sequence[Sequence[Any]], policy: Policy, out_dir: str, *,
              samples: int = DEFAULT_SAMPLES, task: world.GuiTask = world.GuiTask(),
              episode_ids: Sequence[Any] | None = None) -> dict[str, Any]:
  """Runs `policy` on every step and writes the statistics and the new samples (module docstring).

  Args:
    episodes: the training episodes (with their `phones`).
    examples: per episode, its step examples (infigui_r1.step_example), what `policy` is shown.
    policy: (step examples, k) -> k completions per example.
    out_dir: where the three files and the new screenshots go.
    samples: K, completions per step.
    episode_ids: the episodes' ids in the training data (default: their index).

  Returns:
    The summary written to recovery_summary.json.
  """
  from r1jax.rewards import infigui  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(out_dir, "screens"), exist_ok=True)
  flat = [(e, s, example) for e, steps in enumerate(examples) for s, example in enumerate(steps)]
  completions = policy([example for _, _, example in flat], samples)
  summary = {"steps": len(flat), "samples_per_step": samples, "prone": 0, "error_escape": 0, "back_on_track": 0,
             "no_recovery": collections.Counter()}
  with open(os.path.join(out_dir, "recovery_stats.jsonl"), "w", encoding="utf-8") as stats, \
       open(os.path.join(out_dir, "recovery.jsonl"), "w", encoding="utf-8") as out:
    for (e, s, example), group in zip(flat, completions):
      if len(group) != samples:
        raise ValueError(f"policy returned {len(group)} completions for episode {e} step {s}, expected {samples}")
      truth = example.ground_truth
      ok = [bool(infigui.infigui_reward(c, truth).components["param"]) for c in group]
      rate = sum(ok) / samples
      prone = 0 < rate < 1
      episode_id = episode_ids[e] if episode_ids is not None else e
      stats.write(json.dumps({"episode_id": episode_id, "step": s, "action_type": truth["action"],
                              "successes": sum(ok), "samples": samples, "rate": rate, "prone": prone}) + "\n")
      if not prone:
        continue
      summary["prone"] += 1
      episode = episodes[e]
      wrong = _wrong_action(group, ok)
      if wrong is None:
        summary["no_recovery"]["wrong completions do not parse"] += 1
        continue
      phone = episode.phones[s]
      recovery, why = recovery_action(phone, wrong, task)
      if recovery is None:
        summary["no_recovery"][why] += 1
        continue
      wrong_phone = copy.deepcopy(phone)
      wrong_phone.act(wrong, task)
      recovered = copy.deepcopy(wrong_phone)
      recovered.act(recovery, task)
      done = copy.deepcopy(recovered)
      done.act(episode.steps[s].action, task)
      screens = [world.render(p, task) for p in (wrong_phone, recovered, done)]
      names = [os.path.join("screens", f"{episode_id}_{s}_{i}.png") for i in range(3)]
      for name, screen in zip(names, screens):
        with open(os.path.join(out_dir, name), "wb") as f:
          f.write(tvr.encode_png(screen))
      escape_goal = "go back" if recovery["action_type"] == "navigate_back" else "undo the wrong tap"
      out.write(json.dumps(_sample(episode, s, screens[:2], recovery, escape_goal, "error_escape", names[:2],
                                   episode_id, task)) + "\n")
      out.write(json.dumps(_sample(episode, s, screens[1:], episode.steps[s].action, episode.steps[s].subgoal,
                                   "back_on_track", names[1:], episode_id, task)) + "\n")
      summary["error_escape"] += 1
      summary["back_on_track"] += 1
  summary["no_recovery"] = dict(summary["no_recovery"])
  with open(os.path.join(out_dir, "recovery_summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


def episode_examples(path: str, prompt_style: str = "short") -> list[list[Any]]:
  """Per episode record of a written split, its step examples."""
  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  records = sources.file_source(path)
  return [[infigui_r1.step_example(records[i], s, prompt_style=prompt_style)
           for s in range(infigui_r1.step_count(records[i].fields))] for i in range(len(records))]


def sampling_policy(config, checkpoint_dir: str, data_path: str, work_dir: str, *,
                    temperature: float = 1.0) -> Policy:
  """The policy of an HF export sampling at `temperature` (what `main` runs): it reads the steps from
  `data_path` through the data pipeline (the same prompts as training) and hands back the completions
  of the examples it is asked about, matched by (episode_id, step)."""
  import jax  # pylint: disable=g-import-not-at-top
  import data_pipelines  # pylint: disable=g-import-not-at-top
  from experiments import hooks  # pylint: disable=g-import-not-at-top
  from r1jax import sharding  # pylint: disable=g-import-not-at-top
  from r1jax.sampling import Sampler, SamplingControls  # pylint: disable=g-import-not-at-top
  from r1jax.train import loop, stage_configs  # pylint: disable=g-import-not-at-top
  from r1jax.train.sequences import SequenceBuilder  # pylint: disable=g-import-not-at-top
  _, stage = stage_configs(config)[-1]
  stage.init_from, stage.tokenizer = checkpoint_dir, ""
  hooks.prepare(stage, work_dir)
  stage.data.update(dict(synthetic="", path=data_path, shuffle=False, num_epochs=1, batch_size=8))
  mesh = sharding.make_mesh(stage.mesh)
  rules = sharding.logical_rules(None)
  model, params, tokenizer = loop.build_policy(stage, mesh, rules)
  builder = SequenceBuilder(model)
  sampler = Sampler(model, pad_id=builder.pad_id)
  controls = SamplingControls(max_new_tokens=stage.sampling.max_new_tokens, temperature=temperature,
                              stop_token_ids=tuple(model.config.eos_token_id))

  def policy(examples, k):
    wanted = {(e.ground_truth["episode_id"], e.ground_truth["step"]) for e in examples}
    found = {}
    iterator = data_pipelines.make_prompt_iterator(stage, tokenizer, hooks._vision_config(stage))  # pylint: disable=protected-access
    try:
      for index, batch in enumerate(iterator):
        with sharding.use_mesh(mesh, rules):
          result = sampler(params, builder.prompts(batch), key=jax.random.PRNGKey(index), num_samples=k,
                           controls=controls)
        texts = tokenizer.batch_decode(np.asarray(result.tokens), skip_special_tokens=True)
        for row, truth in enumerate(batch["ground_truth"]):
          found[(truth["episode_id"], truth["step"])] = texts[row * k:(row + 1) * k]
        if wanted <= set(found):
          break
    finally:
      iterator.close()
    missing = sorted(wanted - set(found))
    if missing:
      raise ValueError(f"{len(missing)} steps were not sampled (skipped by the pipeline, or in a last partial "
                       f"batch), first: episode {missing[0][0]} step {missing[0][1]}")
    return [found[(e.ground_truth["episode_id"], e.ground_truth["step"])] for e in examples]

  return policy


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True, help="the policy's HF export, e.g. <workdir>/sft/hf")
  parser.add_argument("--workdir", required=True, help="the run's workdir (its data/train.jsonl is read)")
  parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
  parser.add_argument("--episodes", type=int, default=0, help="the first N training episodes (0: all)")
  args = parser.parse_args(argv)
  from experiments.configs import infigui_r1 as recipe  # pylint: disable=g-import-not-at-top
  config = recipe.get_config("")
  data = os.path.join(args.workdir, "data")
  with open(os.path.join(data, "train.params.json"), encoding="utf-8") as f:
    params = json.load(f)
  count = args.episodes or params["num_episodes"]
  episodes = world.split_episodes("train", count, seed=params["seed"], test_size=params["test_size"])
  examples = episode_examples(os.path.join(data, "train.jsonl"))[:count]
  policy = sampling_policy(config, args.checkpoint, os.path.join(data, "train.jsonl"),
                           os.path.join(args.workdir, "recovery"))
  summary = construct(episodes, examples, policy, os.path.join(args.workdir, "recovery"), samples=args.samples)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
