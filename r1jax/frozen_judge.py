"""The judge protocol on a frozen model: render a prompt template, generate in one batch, parse a score.

    judge = FrozenModelJudge(frozen_models["judge"], PromptTemplate(
        text="Sub-goal: {subgoal}\\nReference: {reference}\\nRate the sub-goal from 1 to 10. Score:",
        image_fields=("screenshot",)), low=1, high=10, timeout_s=30)
    calls = judge.judge_batch([{"subgoal": ..., "reference": ..., "screenshot": image}, ...])
    calls[i].status  # "ok" (calls[i].value: the score) | "invalid" | "error" | "timeout"
    judge.counts     # {"ok": ..., "invalid": ..., "error": ..., "timeout": ...} since it was built

One `judge_batch` call is one batched greedy generation on device (`FrozenModel.generate`) under
`timeout_s`; it never raises. The outcome of each item is a `rewards.judges.JudgeCall`, the status
contract every reward already reports as a component: "invalid" when the answer holds no score
(the raw answer is in the error text), "error" when the template cannot be rendered for the item
or the model raised, "timeout" when the whole call ran past its limit (then every item of the
call times out: they share one device call). Failures are also counted (`counts`,
`status_metrics`) and logged once per call, so none is a quiet 0.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
from typing import Any, Callable, Mapping, Sequence

from r1jax.frozen import ChatRequest, FrozenModel
from r1jax.rewards import judges
from r1jax.rewards.scorer import ERROR, OK, call_with_timeout

_log = logging.getLogger(__name__)

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SCORE = re.compile(rf"score\s*[:=]?\s*\**\s*({_NUMBER})", re.IGNORECASE)


def parse_score(text: str) -> float:
  """The score in a judge's answer: the number after the last "score" ("Score: 7", "score = 0.5",
  "**Score:** 8"), or the answer itself when it is one number ("7").

  Raises:
    ValueError quoting the answer when it holds neither.
  """
  found = _SCORE.findall(text)
  if found:
    return float(found[-1])
  if re.fullmatch(rf"\s*{_NUMBER}\s*\.?\s*", text):
    return float(text.strip().rstrip("."))
  raise ValueError(f"no score in the judge's answer {text[:200]!r}")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """A judge prompt: one user turn with an item's images, then `text` filled from the item.

  Attributes:
    text: a `str.format` template over the item's fields, e.g. "Answer: {answer}\\nScore:".
    image_fields: the item fields holding an image (uint8 [H, W, 3] or PIL) or a list of images,
      shown before the text, in this order.
    system: an optional system message.
    max_pixels: per-image pixel cap (None: the frozen model's processor setting).
  """

  text: str
  image_fields: tuple[str, ...] = ()
  system: str = ""
  max_pixels: int | None = None

  def render(self, item: Mapping[str, Any]) -> ChatRequest:
    """The chat request for `item`; raises KeyError naming a field the item lacks."""
    images = []
    for name in self.image_fields:
      if name not in item:
        raise KeyError(f"judge item has no image field {name!r} (fields: {sorted(item)})")
      value = item[name]
      images += list(value) if isinstance(value, (list, tuple)) else [value]
    try:
      text = self.text.format(**item)
    except KeyError as e:
      raise KeyError(f"judge template field {e.args[0]!r} is not in the item (fields: {sorted(item)})") from None
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
        [{"role": "user", "content": content}]
    return ChatRequest(messages=messages, images=images, max_pixels=self.max_pixels)


class FrozenModelJudge:
  """A judge that asks a frozen model (see the module docstring).

  Args:
    model: the frozen model (`config.frozen.<name>`, role "judge").
    template: renders each item's prompt.
    parse: answer text -> score; raises on an answer without one (status "invalid").
    low, high: the score is clipped to [low, high]; a non-finite score is "invalid".
    timeout_s: the limit of one batched call.
    max_new_tokens: the answer budget (None: the frozen model's `max_new_tokens`).
    sample_item: for a reward's judge (`judge_rollout`): (completion, ground truth, reward
      context) -> the template's fields for that sample, or None when it needs no judgement.
  """

  def __init__(self, model: FrozenModel, template: PromptTemplate, *, parse: Callable[[str], float] = parse_score,
               low: float = 0.0, high: float = 1.0, timeout_s: float = judges.DEFAULT_TIMEOUT_S,
               max_new_tokens: int | None = None,
               sample_item: Callable[[str, Any, Mapping[str, Any]], Mapping[str, Any] | None] | None = None):
    self.model, self.template, self.parse = model, template, parse
    self.low, self.high, self.timeout_s, self.max_new_tokens = float(low), float(high), float(timeout_s), max_new_tokens
    self.sample_item = sample_item
    self.counts: collections.Counter[str] = collections.Counter()

  def judge_batch(self, items: Sequence[Mapping[str, Any]]) -> list[judges.JudgeCall]:
    """One `JudgeCall` per item, from one batched generation; never raises."""
    calls: list[judges.JudgeCall | None] = [None] * len(items)
    requests = []
    for index, item in enumerate(items):
      try:
        requests.append((index, self.template.render(item)))
      except Exception as e:  # noqa: BLE001  (a bad item fails alone, counted)
        calls[index] = judges.JudgeCall(judges.JUDGE_ERROR, error=f"template: {type(e).__name__}: {e}"[:500])
    if requests:
      status, value = call_with_timeout(self.model.generate, self.timeout_s, [r for _, r in requests],
                                        max_new_tokens=self.max_new_tokens)
      for position, (index, _) in enumerate(requests):
        if status == OK:
          calls[index] = self._score(value[position].text)
        elif status == ERROR:
          calls[index] = judges.JudgeCall(judges.JUDGE_ERROR, error=f"{type(value).__name__}: {value}"[:500])
        else:
          calls[index] = judges.JudgeCall(judges.JUDGE_TIMEOUT,
                                          error=f"no answer within {self.timeout_s:g} s for a batch of {len(requests)}")
    self.counts.update(call.status for call in calls)
    failed = [call for call in calls if call.failed]
    if failed:
      _log.warning("judge %s: %d of %d calls failed (%s); first: %s: %s", self.model.name, len(failed), len(calls),
                   ", ".join(f"{s}={n}" for s, n in sorted(collections.Counter(c.status for c in failed).items())),
                   failed[0].status, failed[0].error)
    return calls

  def _score(self, answer: str) -> judges.JudgeCall:
    try:
      return judges.JudgeCall(judges.JUDGE_OK, judges.clipped_score(self.parse(answer), self.low, self.high))
    except Exception as e:  # noqa: BLE001  (any unusable answer is reported, not raised)
      return judges.JudgeCall(judges.JUDGE_INVALID, error=f"{type(e).__name__}: {e}"[:500])


def judge_rollout(judge_context: Mapping[str, Any] | None, completions: Sequence[str], ground_truths: Sequence[Any],
                  contexts: list[dict[str, Any]]) -> dict[str, float]:
  """Runs each reward judge of `judge_context` that has `judge_batch` and a `sample_item` (a
  `FrozenModelJudge`, `three_d_r1.SemanticJudge`) once
  over a rollout's reward samples, before they are scored, and puts each sample's `JudgeCall` in its
  context under the judge's key (in place; "missing" for a sample that needs no judgement). The
  reward reads it through `judges.call_judge` as if it had called the judge itself, so rewards stay
  per-sample functions while the model runs once per step, on device.

  Returns:
    `status_metrics` of every such judge (`judge/<key>/<status>`).
  """
  metrics = {}
  for key, judge in (judge_context or {}).items():
    # A FrozenModelJudge, or any judge with the same two methods (3D-R1's batched embedder).
    if not hasattr(judge, "judge_batch") or getattr(judge, "sample_item", None) is None:
      continue
    items, asked = [], []
    for index, (completion, truth, context) in enumerate(zip(completions, ground_truths, contexts)):
      try:
        item = judge.sample_item(completion, truth, context)
      except Exception as e:  # noqa: BLE001  (a sample the judge cannot be asked about fails alone, counted)
        context[key] = judges.JudgeCall(judges.JUDGE_ERROR, error=f"sample_item: {type(e).__name__}: {e}"[:500])
        continue
      if item is None:
        context[key] = judges.JudgeCall(judges.MISSING)
      else:
        items.append(item)
        asked.append(index)
    for index, call in zip(asked, judge.judge_batch(items)):
      contexts[index][key] = call
    metrics.update(status_metrics([context[key] for context in contexts], key))
  return metrics


def status_metrics(calls: Sequence[judges.JudgeCall], name: str) -> dict[str, float]:
  """`judge/<name>/<status>`: how many of `calls` ended each way (every status, zeros included)."""
  counts = collections.Counter(call.status for call in calls)
  statuses = (judges.JUDGE_OK, judges.JUDGE_INVALID, judges.JUDGE_ERROR, judges.JUDGE_TIMEOUT, judges.MISSING)
  return {f"judge/{name}/{status}": float(counts[status]) for status in statuses}
