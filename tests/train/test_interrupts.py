"""Stopping a run: SIGINT / SIGTERM save and exit with a one-line hint; a failed save stops the run."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import hooks as hooks_lib
from r1jax import checkpoint, train
from r1jax.checkpoint import Checkpointer
from r1jax.errors import RunStoppedError
from r1jax.train.writer import read_metrics
from tests.train.test_loop import _config, _final_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(workdir, *flags):
  command = [sys.executable, os.path.join(ROOT, "experiments", "run.py"),
             "--config=" + os.path.join(ROOT, "experiments", "configs", "letters_grpo.py"), f"--workdir={workdir}",
             "--config.train.checkpoint_every=1000", *flags]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(process, workdir, steps: int, timeout_s: float = 240.0):
  deadline = time.monotonic() + timeout_s
  while len(read_metrics(str(workdir))) < steps:
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "the run logged no steps in time"
    time.sleep(0.05)


def test_sigint_saves_a_checkpoint_says_how_to_resume_and_the_rerun_resumes(tmp_path):
  process = _start(tmp_path, "--config.train.steps=100000")
  _wait_for_steps(process, tmp_path, 2)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  stopped = [line for line in stderr.splitlines() if "stopped at step" in line]
  assert len(stopped) == 1 and "Re-run the same command to resume" in stopped[0], stderr[-3000:]
  step = int(stopped[0].split("stopped at step ")[1].split()[0])
  assert Checkpointer(str(tmp_path / "checkpoints"), async_save=False).latest_step() == step >= 2

  rerun = _start(tmp_path, f"--config.train.steps={step + 1}")
  _, stderr = rerun.communicate(timeout=240)
  assert rerun.returncode == 0, stderr[-3000:]
  assert f"resumed stage grpo at step {step}" in stderr
  assert [r["step"] for r in read_metrics(str(tmp_path)) if "reward/mean" in r][-2:] == [step, step + 1]


def test_a_second_signal_exits_at_once(tmp_path):
  process = _start(tmp_path, "--config.train.steps=100000")
  _wait_for_steps(process, tmp_path, 2)
  process.send_signal(signal.SIGTERM)
  process.send_signal(signal.SIGINT)  # another signal number, so the two are not merged into one
  _, stderr = process.communicate(timeout=120)
  assert process.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM), stderr[-3000:]
  assert "exiting now, without saving" in stderr or "stopped at step" in stderr, stderr[-3000:]
  assert "Traceback" not in stderr


class _FillDiskAfter:
  """Wraps a data iterator; after `n` batches it fills the disk holding `path` but for 256 KiB: room
  for metrics lines, not for a checkpoint (~1 MiB)."""

  def __init__(self, iterator, n, path):
    self.iterator, self.n, self.path = iterator, n, path
    self.filled_at = None

  def __next__(self):
    if self.n == 0 and self.filled_at is None:
      self.filled_at = True
      # Unbuffered: a buffered file keeps the bytes of the write that failed and raises ENOSPC again
      # when truncate() or close() flushes them.
      # Bounded by what statvfs says is free: a filesystem that ignores its size would otherwise
      # take the filler through all of the machine's memory or disk.
      stats = os.statvfs(self.path)
      bound = stats.f_bavail * stats.f_frsize + (1 << 20)
      with open(os.path.join(self.path, "filler"), "wb", buffering=0) as f:
        try:
          while f.tell() < bound:
            f.write(b"\0" * (1 << 16))
        except OSError as e:
          assert e.errno == errno.ENOSPC
        else:
          raise AssertionError(f"{self.path} took {f.tell()} bytes without ENOSPC; statvfs said {bound} were free")
        f.truncate(max(0, f.tell() - (256 << 10)))
    self.n -= 1
    return next(self.iterator)

  def __getattr__(self, name):
    return getattr(self.iterator, name)


@pytest.fixture
def small_disk(tmp_path):
  """A 32 MiB tmpfs (needs root, as the CI and the development machines run)."""
  mount = tmp_path / "disk"
  mount.mkdir()
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32M", "tmpfs", str(mount)], capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
  stats = os.statvfs(mount)
  if stats.f_blocks * stats.f_frsize > 64 << 20:  # the mount did not take, or ignored its size
    subprocess.run(["umount", "-l", str(mount)], check=False)
    pytest.skip(f"{mount} is {stats.f_blocks * stats.f_frsize >> 20} MiB after mounting a 32 MiB tmpfs on it")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=True)


# Synchronous saves: the disk is full before a save starts, which refuses it before writing.
# Asynchronous: the disk fills while a background save writes, which fails inside orbax.
@pytest.mark.parametrize("async_save", [False, True])
def test_a_full_disk_stops_the_run_at_the_failed_save_and_keeps_the_last_checkpoint(small_disk, capfd, async_save):
  workdir = small_disk / "run"
  config = _config(workdir, steps=50, checkpoint_every=1)
  config.train.async_checkpoints = async_save
  hooks = hooks_lib.data_hooks(config)
  filling = train.DataHooks(prompt_iterator=lambda c, t: _FillDiskAfter(hooks.prompt_iterator(c, t), 3, small_disk))
  # A background save racing the filler may leave the next metrics line the first write to fail.
  expected = checkpoint.CheckpointSaveError if not async_save else RunStoppedError
  with pytest.raises(expected) as failure:
    train.run(config, str(workdir), filling)
  message = str(failure.value)
  assert "MiB are free there" in message, message
  assert "No space left on device" in message or "ENOSPC" in message or "Errno 28" in message, message
  latest = Checkpointer(str(workdir / "checkpoints"), async_save=False).latest_step()
  assert latest is not None and latest <= 3
  if isinstance(failure.value, checkpoint.CheckpointSaveError):
    assert str(workdir / "checkpoints") in message and f"checkpoint (step {latest}) is untouched" in message
  # It stopped at the failed save: at most the step in flight was trained after it; and the
  # metrics file is still whole JSONL.
  assert max(r["step"] for r in read_metrics(str(workdir))) <= 5
  os.remove(small_disk / "filler")
  assert _final_params(str(workdir), config)[0] == latest  # still restorable
  if not async_save:
    assert "checked before writing" in message
    assert "Traceback" not in capfd.readouterr().err  # one error, no echoes from background writers
