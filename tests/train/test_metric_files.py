"""The metric files a run writes: metrics.jsonl and TensorBoard events, and what a failing disk does to them."""
import errno
import glob
import logging
import os
import struct
import threading

from tensorboardX.proto import event_pb2
from tensorboardX import record_writer

from r1jax.train.writer import MetricWriter, read_metrics


def _events(workdir) -> list[event_pb2.Event]:
  """Every event in the run's TensorBoard files (TFRecord framing: length, crc, data, crc)."""
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("Q", data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def test_scalars_reach_tensorboard_with_their_steps_and_non_finite_values_are_left_out(tmp_path):
  with MetricWriter(str(tmp_path), total_steps=3, progress_bar=False) as writer:
    writer.write(1, {"reward/mean": 0.25, "loss": float("nan")})
    writer.write(2, {"reward/mean": 0.5, "loss": 1.5})
  scalars = [(e.step, v.tag, v.simple_value) for e in _events(tmp_path) for v in e.summary.value]
  assert scalars == [(1, "reward/mean", 0.25), (2, "reward/mean", 0.5), (2, "loss", 1.5)]
  assert [r["loss"] for r in read_metrics(str(tmp_path))] == [None, 1.5]


def test_a_failing_event_file_is_reported_once_and_never_blocks_the_run(tmp_path, monkeypatch, caplog):
  # tensorboardX's SummaryWriter blocked forever here: its writer thread died on ENOSPC, its bounded
  # queue filled, and the 11th add_scalar waited on it.
  # The disk fills after a few records: later writes fail as a full buffer would when it flushes.
  records, write = [], record_writer.RecordWriter.write

  def write_until_full(self, data):
    records.append(data)
    if len(records) > 5:
      raise OSError(errno.ENOSPC, "No space left on device")
    write(self, data)
  monkeypatch.setattr(record_writer.RecordWriter, "write", write_until_full)
  scalars = {f"metric/{i}": float(i) for i in range(20)}
  writer = MetricWriter(str(tmp_path), total_steps=30, progress_bar=False)

  def write_all():
    for step in range(1, 31):
      writer.write(step, scalars)
    writer.close()
  with caplog.at_level(logging.WARNING):
    thread = threading.Thread(target=write_all, daemon=True)
    thread.start()
    thread.join(timeout=60)
  assert not thread.is_alive(), "writing metrics blocked after the TensorBoard file failed"
  assert [r["step"] for r in read_metrics(str(tmp_path))] == list(range(1, 31))  # the JSONL record goes on
  failures = [r.getMessage() for r in caplog.records if "TensorBoard events" in r.getMessage()]
  assert len(failures) == 1 and "No space left on device" in failures[0], failures
