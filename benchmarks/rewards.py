"""Reward throughput: completions scored per second through `scorer.score_batch`.

    python benchmarks/rewards.py                        # 10k completions per recipe, 1 worker
    python benchmarks/rewards.py --n 2000 --workers 4 --recipes satori,infigui

Completions mix perfect, partly right and malformed outputs (a third each), so every parsing and
scoring path is timed. "direct" calls the reward in a plain loop, without the pool, for comparison.
"""
import argparse
import json
import time

from r1jax.rewards import embodied_r1, infigui, longvila, satori, scorer, star_r1


def _star_r1(i):
  answers = ["1.color.red, 2.size.large", "1.color.blue", "2.size.large, 3.shape.cube, 1.color.red, oops"]
  return f"<think>scene {i}</think><answer>{answers[i % 3]}</answer>", {"answer": ["1.color.red", "2.size.large"]}, {}


def _satori(i):
  boxes = ["[[0, 0, 378, 252]]", "[[0, 0, 189, 252], [100, 50, 300, 200]]", "[[0, 0, 378"]
  answers = ["cat", "a dog", "Cat."]
  completion = (f"<caption>a cat sits on the mat number {i % 7}</caption><bbox>{boxes[i % 3]}</bbox>"
                f"<answer>{answers[i % 3]}</answer>")
  truth = {"bboxs": [[0, 0, 500, 350]], "possible_answers": ["cat"], "image_caption": "A cat sits on the mat.",
           "width": 1000, "height": 700}
  return completion, truth, {}


def _infigui(i):
  actions = [{"action": "click", "coordinate": [202, 301]}, {"action": "click", "coordinate": [900, 2000]},
             {"action": "type", "text": "hello"}]
  completion = (f"<think>step {i} <step>tap settings</step></think><tool_call>"
                f"{json.dumps({'name': 'mobile_use', 'arguments': actions[i % 3]})}</tool_call>")
  truth = {"action": "click", "candidate_bbox": [[100, 200, 300, 400]], "coordinate": [200, 300], "width": 1080,
           "height": 2400}
  return completion, truth, {}


def _embodied_r1(i):
  trajectory = [[k * 20, 0] for k in range(8)]
  points = [trajectory, [[x, y + 20] for x, y in trajectory], trajectory[:5]]
  completion = f"<think>trace {i}</think><answer><point>{json.dumps(points[i % 3])}</point></answer>"
  return completion, {"answer": f"<type>fsd_visual_trace</type>{json.dumps({'trajectory': trajectory})}"}, {}


def _longvila(i):
  answers = ["C", "(b) the red car", "\\frac{3}{4}"]
  truths = ["C", "C", "0.75"]
  return f"<think>frame {i}</think><answer>{answers[i % 3]}</answer>", {"answer": truths[i % 3]}, {}


RECIPES = {"star_r1": (star_r1.star_r1_reward, _star_r1), "satori": (satori.satori_reward, _satori),
           "infigui": (infigui.infigui_reward, _infigui), "embodied_r1": (embodied_r1.embodied_r1_reward, _embodied_r1),
           "longvila": (longvila.longvila_reward, _longvila)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10_000, help="completions per recipe")
  parser.add_argument("--workers", type=int, default=1, help="score_batch worker threads")
  parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
  args = parser.parse_args()
  print(f"{'recipe':<12} {'pool c/s':>10} {'direct c/s':>11} {'errors':>7} {'timeouts':>9} {'mean total':>11}")
  for name in args.recipes.split(","):
    reward, make = RECIPES[name]
    completions, truths, contexts = zip(*(make(i) for i in range(args.n)))
    reward(completions[0], truths[0], **contexts[0])  # lazy imports (nltk, rouge) outside the timing
    start = time.perf_counter()
    scores = scorer.score_batch(reward, completions, truths, contexts, num_workers=args.workers)
    pooled = args.n / (time.perf_counter() - start)
    start = time.perf_counter()
    for completion, truth, context in zip(completions, truths, contexts):
      reward(completion, truth, **context)
    direct = args.n / (time.perf_counter() - start)
    print(f"{name:<12} {pooled:>10.0f} {direct:>11.0f} {scores.num_errors:>7} {scores.num_timeouts:>9} "
          f"{scores.totals.mean():>11.3f}")


if __name__ == "__main__":
  main()
