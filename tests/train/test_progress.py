"""What a run prints: the progress bar with log lines around it, and a quiet interpreter exit.

The bar tests render the written text as a terminal would ('\\r' returns to the line's start,
later characters overwrite earlier ones) and check the screen, not tqdm's exact bytes.
"""
import io
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from r1jax.train import default_config
from r1jax.train.writer import MetricWriter

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCALARS = {"reward/mean": 0.5, "loss": 0.125, "perf/steps_per_s": 2.0}


class _FakeTerminal(io.StringIO):

  def isatty(self):
    return True


def _screen(text: str) -> list[str]:
  """The lines a terminal shows for `text` (carriage returns overwrite), trailing blanks dropped."""
  lines, line, col = [], [], 0
  for char in text:
    if char == "\n":
      lines.append("".join(line).rstrip())
      line, col = [], 0
    elif char == "\r":
      col = 0
    else:
      if col < len(line):
        line[col] = char
      else:
        line.append(char)
      col += 1
  if "".join(line).strip():
    lines.append("".join(line).rstrip())
  return lines


@pytest.fixture
def console(monkeypatch):
  """A fake terminal that the root logger's only handler writes to (as absl's handler writes to
  stderr in experiments/run.py); the root logger's setup is restored after. Tests make it sys.stderr
  in their body (pytest's capture sets sys.stderr again between a fixture and the test)."""
  stream = _FakeTerminal()
  root = logging.getLogger()
  saved_handlers, saved_level = root.handlers[:], root.level
  handler = logging.StreamHandler(stream)
  handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
  root.handlers[:] = [handler]
  root.setLevel(logging.INFO)
  yield stream
  root.handlers[:] = saved_handlers
  root.setLevel(saved_level)


def _bar_lines(lines: list[str], name: str = "grpo") -> list[str]:
  return [line for line in lines if line.startswith(f"{name}:")]


def test_log_lines_above_the_bar_and_final_state_once(console, tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "stderr", console)
  # Python's own way of printing a warning (pytest's, recording them, is in place during tests).
  monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                      sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
  handlers = logging.getLogger().handlers[:]
  showwarning = warnings.showwarning
  writer = MetricWriter(str(tmp_path), total_steps=4, name="grpo")
  assert writer._bar is not None  # pylint: disable=protected-access
  for step in range(1, 5):
    logging.info("log line before step %d", step)
    if step == 2:
      warnings.warn_explicit("a warning mid-run", UserWarning, "somefile.py", 7)
    writer.write(step, _SCALARS)
  logging.warning("the final evaluation")
  writer.close()
  writer.close()  # idempotent: no second final line
  logging.info("after the bar")

  lines = _screen(console.getvalue())
  for step in range(1, 5):
    assert f"INFO log line before step {step}" in lines, lines
  assert "WARNING the final evaluation" in lines, lines
  assert "somefile.py:7: UserWarning: a warning mid-run" in lines, lines
  # Every line is either a whole log/warning line or the bar; no log text inside a bar line.
  for line in lines:
    assert line.startswith(("INFO ", "WARNING ", "somefile.py:", "grpo:")), lines
    if line.startswith("grpo:"):
      assert "INFO" not in line and "WARNING" not in line, line
  bars = _bar_lines(lines)
  assert len(bars) == 1, lines  # the bar is redrawn in place, its final state shown once
  assert "4/4" in bars[0] and "reward=0.5" in bars[0] and "loss=0.125" in bars[0], bars
  assert lines[-2:] == [bars[0], "INFO after the bar"], lines
  assert console.getvalue().count("\n") == len(lines)  # nothing left half-drawn
  # The logging setup and warnings hook are back as they were.
  assert logging.getLogger().handlers == handlers
  assert warnings.showwarning is showwarning


def test_bar_closed_once_when_the_loop_fails(console, tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "stderr", console)
  writer = MetricWriter(str(tmp_path), total_steps=10, name="sft")
  with pytest.raises(KeyboardInterrupt):
    try:  # as the training loop does
      writer.write(1, {"sft/nll": 2.5})
      writer.write(2, {"sft/nll": 2.0})
      raise KeyboardInterrupt
    finally:
      writer.close()
  logging.error("stopped at step 2")
  lines = _screen(console.getvalue())
  bars = _bar_lines(lines, "sft")
  assert len(bars) == 1 and "2/10" in bars[0] and "nll=2" in bars[0], lines
  assert lines[-1] == "ERROR stopped at step 2", lines


def test_resumed_bar_starts_at_the_restored_step(console, tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "stderr", console)
  writer = MetricWriter(str(tmp_path), total_steps=8, initial_step=5, name="grpo")
  writer.write(6, _SCALARS)
  writer.close()
  bars = _bar_lines(_screen(console.getvalue()))
  assert len(bars) == 1 and "6/8" in bars[0], bars


@pytest.mark.parametrize("terminal, progress_bar", [(False, True), (True, False)])
def test_log_line_per_step_without_a_bar(monkeypatch, tmp_path, caplog, terminal, progress_bar):
  stream = _FakeTerminal() if terminal else io.StringIO()  # not a terminal: a file, a pipe, CI
  monkeypatch.setattr(sys, "stderr", stream)
  handlers = logging.getLogger().handlers[:]
  with caplog.at_level(logging.INFO, logger="r1jax.train.writer"):
    writer = MetricWriter(str(tmp_path), total_steps=3, name="grpo", progress_bar=progress_bar)
    for step in range(1, 4):
      writer.write(step, _SCALARS)
    writer.close()
  assert writer._bar is None  # pylint: disable=protected-access
  assert stream.getvalue() == ""  # no bar, not even an empty one
  assert [r.getMessage() for r in caplog.records] == [
      f"grpo step {step}/3: reward=0.5 loss=0.125 steps/s=2" for step in range(1, 4)]
  assert logging.getLogger().handlers == handlers


def test_shipped_configs_leave_the_bar_on():
  """True draws the bar only on a terminal, so the recipes need not turn it off for files or CI."""
  sys.path.insert(0, _ROOT)
  from experiments.configs import letters_grpo, star_r1  # pylint: disable=g-import-not-at-top
  assert default_config().train.progress_bar is True
  assert letters_grpo.get_config().train.progress_bar is True
  assert star_r1.get_config().train.progress_bar is True


_EXIT_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import data_pipelines
    from data_pipelines.tasks import letters
    from r1jax import tokenization

    def main():
      path = tokenization.build_tokenizer({tokdir!r}, letters.corpus(), vocab_size=1024)
      tok = tokenization.load_tokenizer(path)
      data = data_pipelines.default_config(name="letters", batch_size=4, max_prompt_length=64)
      data.letters = "abc"
      started = data_pipelines.make_prompt_iterator(data, tok)
      next(started)  # its prefetch thread runs
      never_started = data_pipelines.make_sft_iterator(data, tok)
      data.num_workers = 1
      with_worker = data_pipelines.make_prompt_iterator(data, tok)
      next(with_worker)  # a worker process runs
      closed = data_pipelines.make_prompt_iterator(data, tok)
      next(closed)
      closed.close()
      return [started, never_started, with_worker, closed]

    if __name__ == "__main__":
      ITERATORS = main()  # still referenced when the interpreter shuts down
      print("done")
""")


def test_data_iterators_exit_quietly(tmp_path):
  """grain's iterators close in `__del__`, which printed `Exception ignored in ... AttributeError` when
  they were collected during interpreter shutdown; pipelines close before that."""
  script = tmp_path / "exit_script.py"
  script.write_text(_EXIT_SCRIPT.format(root=_ROOT, tokdir=str(tmp_path / "tokenizer")))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(tmp_path), check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().endswith("done"), result.stdout
  for noise in ("Exception ignored", "AttributeError", "Traceback"):
    assert noise not in result.stderr, result.stderr
