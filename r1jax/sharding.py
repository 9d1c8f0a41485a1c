"""Device mesh from config, logical-axis rules, and placement of params and batches.

Model code names the axes of every parameter (`vocab`, `embed`, `heads`, ...) and constrains
activations with `act_*` names. The rules here, overridable from config, map those names onto
the four axes of the mesh:

  data      plain data parallelism: the batch is split, parameters are replicated.
  fsdp      the batch is split AND parameters are split on `embed` (ZeRO-3; XLA all-gathers
            each weight where it is used and reduce-scatters its gradient).
  tensor    Megatron-style: `heads`, `kv_heads`, `mlp`, `vocab` (and their activations) split.
  sequence  the length axis of activations.

A parameter dimension whose size is not divisible by its mesh axes stays replicated (e.g. the
28 heads of Qwen2.5-7B under tensor=8) and is logged once, so every layout works for every model.

Multi-host: call `initialize()` first thing in the program; `make_mesh` then spans all processes,
`shard_batch` assembles the global batch from each process's own rows (`process_shard_info`
tells the data loader which rows), and jitted functions run the same on every process.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from r1jax.models import api

MESH_AXES = ("data", "fsdp", "tensor", "sequence")
MESH_CONFIG_KEYS = ("shape", "rules")

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: Rules = (
    # Parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("vision_patch", None),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
    # Activations (never take the parameter rules: `embed` -> fsdp must not split hidden states).
    ("act_batch", ("data", "fsdp")),
    ("act_length", "sequence"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # Packed vision patches (frame-major): the tower's compute splits like the batch and over the
    # `sequence` devices too, i.e. a long video's frames spread over the devices of its tokens.
    ("act_patches", ("data", "fsdp", "sequence")),
)

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- mesh


def default_mesh_config() -> ml_collections.ConfigDict:
  """`config.mesh` of an experiment: FSDP over all devices, default rules."""
  return ml_collections.ConfigDict({"shape": {"data": 1, "fsdp": -1, "tensor": 1, "sequence": 1}, "rules": {}})


def mesh_shape(shape, num_devices: int) -> dict[str, int]:
  """Resolves `mesh.shape` to a size per axis of `MESH_AXES` (in that order).

  Args:
    shape: {axis: size} (missing axes are 1) or a sequence of 4 sizes in `MESH_AXES` order;
      one size may be -1, meaning all remaining devices.
    num_devices: devices the mesh must use exactly.

  Raises:
    ValueError naming the offending key, or the product and the device count.
  """
  if isinstance(shape, Mapping) or hasattr(shape, "items"):
    sizes = dict(shape.items())
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"mesh.shape has unknown axis {unknown}; mesh axes are {list(MESH_AXES)}")
    sizes = {axis: int(sizes.get(axis, 1)) for axis in MESH_AXES}
  else:
    if len(shape) != len(MESH_AXES):
      raise ValueError(f"mesh.shape={tuple(shape)} must give {len(MESH_AXES)} sizes for axes {list(MESH_AXES)}")
    sizes = {axis: int(size) for axis, size in zip(MESH_AXES, shape)}
  bad = {axis: size for axis, size in sizes.items() if size < 1 and size != -1}
  fill = [axis for axis, size in sizes.items() if size == -1]
  if bad or len(fill) > 1:
    raise ValueError(f"mesh.shape={sizes}: sizes must be positive, with at most one -1 (got {bad or fill})")
  known = math.prod(size for size in sizes.values() if size != -1)
  if num_devices % known:
    raise ValueError(f"mesh.shape={sizes} needs a multiple of {known} devices, but there are {num_devices}: "
                     f"the product of the sizes must divide the device count")
  if fill:
    sizes[fill[0]] = num_devices // known
  elif known != num_devices:
    raise ValueError(f"mesh.shape={sizes} uses {known} devices, but there are {num_devices}; "
                     f"set one axis to -1 to take the remaining devices")
  return sizes


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` over `devices` (default: all devices of all processes) with axes `MESH_AXES`.

  Args:
    mesh_config: `config.mesh` (a ConfigDict/dict with `shape` and optional `rules`), or the
      shape itself: {"data": 1, "fsdp": -1, "tensor": 1, "sequence": 1} or (1, -1, 1, 1).
    devices: devices to use, e.g. a subset for tests.

  Device order follows `jax.make_mesh` (TPU topology aware; on GPU/CPU processes are contiguous,
  so the leading `data` axis spans hosts and `tensor` stays inside a host).
  """
  if isinstance(mesh_config, Mapping) or hasattr(mesh_config, "items"):
    keys = set(mesh_config.keys())
    if "shape" in keys:
      unknown = sorted(keys - set(MESH_CONFIG_KEYS))
      if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config.mesh; allowed: {list(MESH_CONFIG_KEYS)}")
      mesh_config = mesh_config["shape"]
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


# --------------------------------------------------------------------------- rules


def _mesh_axes(value, where: str) -> MeshAxes:
  """Normalises a rule value: None, an axis name, or a tuple of axis names."""
  if value is None or value == "" or value == ():
    return None
  axes = (value,) if isinstance(value, str) else tuple(value)
  unknown = [axis for axis in axes if axis not in MESH_AXES]
  if unknown:
    raise ValueError(f"{where}={value!r} names unknown mesh axis {unknown}; mesh axes are {list(MESH_AXES)}")
  return axes[0] if len(axes) == 1 else axes


def logical_rules(overrides: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> Rules:
  """`DEFAULT_RULES` with `overrides` applied (typically `config.mesh.rules`).

  Args:
    overrides: {logical name: mesh axis | [mesh axes] | None}; a known name is replaced in place,
      a new name (e.g. of a new module) is appended.
  """
  rules = dict(DEFAULT_RULES)
  if overrides:
    items = overrides.items() if hasattr(overrides, "items") else overrides
    for name, value in items:
      rules[name] = _mesh_axes(value, f"mesh.rules.{name}")
  return tuple(rules.items())


def _rules_or_default(rules) -> Rules:
  if rules is None:
    return DEFAULT_RULES
  if hasattr(rules, "items"):  # a config mapping of overrides
    return logical_rules(rules)
  return tuple(rules)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh, rules=None,
                    what: str = "array") -> PartitionSpec:
  """The PartitionSpec of an array whose dimensions have logical `names`.

  Mesh axes of size 1 are left out, a mesh axis is used at most once (first dimension wins) and,
  when `shape` is given, trailing mesh axes of a rule are dropped until the dimension divides.

  Raises:
    ValueError naming `what` and the logical axis when no rule exists for it.
  """
  table = dict(reversed(_rules_or_default(rules)))  # the first rule of a name wins, as in flax
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(names):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(f"{what} has logical axis {name!r} with no sharding rule; add it to config.mesh.rules "
                       f"(known logical axes: {sorted(table)})")
    rule = table[name]
    axes = [axis for axis in ((rule,) if isinstance(rule, str) else rule or ())
            if mesh.shape.get(axis, 1) > 1 and axis not in used]
    wanted = list(axes)
    while shape is not None and axes and shape[dim] % math.prod(mesh.shape[axis] for axis in axes):
      axes.pop()
    if axes != wanted:
      _log_replicated(what, name, shape[dim], tuple(wanted), tuple(axes))
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*spec)


@functools.lru_cache(maxsize=None)
def _log_replicated(what, name, size, wanted, kept) -> None:
  _log.info("%s: logical axis %r of size %d is not divisible by mesh axes %s; sharded over %s only",
            what, name, size, wanted, kept or "nothing (replicated)")


def logical_sharding(mesh: Mesh, names: Sequence[str | None], rules=None, shape=None) -> NamedSharding:
  """`NamedSharding` for an array with logical axis `names` (see `logical_to_spec`)."""
  return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))


# --------------------------------------------------------------------------- parameters


def _is_boxed(x) -> bool:
  return isinstance(x, nn.Partitioned)


def _specs(boxed, mesh: Mesh, rules, what: str, require_names: bool) -> Any:
  rules = _rules_or_default(rules)

  def spec(path, leaf):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    if _is_boxed(leaf):
      return logical_to_spec(leaf.names, leaf.value.shape, mesh, rules, what=f"{what} {name}")
    if require_names:
      raise ValueError(f"{what} {name} has no logical axis names (create it with param_with_axes)")
    return PartitionSpec()

  return jax.tree_util.tree_map_with_path(spec, boxed, is_leaf=_is_boxed)


def _named(specs, mesh: Mesh) -> Any:
  return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs,
                                is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_specs(model_or_abstract, mesh: Mesh, rules=None) -> Any:
  """PartitionSpec of every parameter: a tree like {"params": ...} of the model.

  Args:
    model_or_abstract: a flax module, or its boxed parameters (`api.abstract_params(model)` or
      `model.init(...)` before unboxing) carrying logical axis names.
    rules: logical-axis rules (pairs, or a mapping of overrides); default `DEFAULT_RULES`.

  Raises:
    ValueError naming the parameter and the axis when a logical axis has no rule, or naming the
    parameter when it has no logical axis names.
  """
  boxed = api.abstract_params(model_or_abstract) if isinstance(model_or_abstract, nn.Module) else model_or_abstract
  return _specs(boxed, mesh, rules, "parameter", require_names=True)


def param_shardings(model_or_abstract, mesh: Mesh, rules=None) -> Any:
  """`NamedSharding` of every parameter: a tree like {"params": ...} (see `param_specs`)."""
  return _named(param_specs(model_or_abstract, mesh, rules), mesh)


def state_shardings(abstract_state, mesh: Mesh, rules=None) -> Any:
  """Shardings of any state tree: boxed leaves by their logical names, the rest replicated.

  E.g. `jax.eval_shape(tx.init, api.abstract_params(model))`: optax keeps the boxes, so Adam's
  moments follow their parameters while step counts are replicated.
  """
  return _named(_specs(abstract_state, mesh, rules, "state leaf", require_names=False), mesh)


def opt_state_shardings(tx, model_or_abstract, mesh: Mesh, rules=None) -> Any:
  """Shardings of `tx.init(params)` for an optax transformation `tx` (see `state_shardings`)."""
  boxed = api.abstract_params(model_or_abstract) if isinstance(model_or_abstract, nn.Module) else model_or_abstract
  return state_shardings(jax.eval_shape(tx.init, boxed), mesh, rules)


def mirror_param_shardings(abstract_tree, params, mesh: Mesh) -> Any:
  """Shardings for a tree that holds copies of `params` (a train state, an optimizer state).

  A leaf whose key path ends with a parameter's key path and has its shape (Adam's moments under
  any optax wrapper, e.g. `multi_transform` for frozen parameters) gets that parameter's sharding;
  every other leaf (step counts, keys) is replicated. Without this, `jit(tx.init)` leaves zeros
  with no data dependence on the parameters replicated on every device.

  Args:
    abstract_tree: the tree's shapes, e.g. `jax.eval_shape(create_state, params)`.
    params: placed (unboxed) parameters, e.g. {"params": ...}.
  """
  by_path = {tuple(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  depths = sorted({len(path) for path in by_path}, reverse=True)
  replicated = NamedSharding(mesh, PartitionSpec())

  def sharding_of(path, leaf):
    for depth in depths:
      param = by_path.get(tuple(path[-depth:])) if len(path) >= depth else None
      if param is not None and param.shape == leaf.shape:
        return param.sharding if isinstance(param.sharding, NamedSharding) else replicated
    return replicated

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_tree)


def init_sharded(model: nn.Module, rng: jax.Array, mesh: Mesh, rules=None) -> Any:
  """Random parameters created directly in their shards: each device computes only its slice.

  Equal to `api.init_params(model, rng)` (the threefry RNG is partitionable), but never holds a
  full copy of the parameters on one device.
  """
  shardings = param_shardings(model, mesh, rules)
  return jax.jit(functools.partial(api.init_params, model), out_shardings=shardings)(rng)


def shard_params(params: Any, mesh: Mesh, rules=None, model: nn.Module | None = None) -> Any:
  """Places `params` into their shardings; returns an unboxed tree like {"params": ...}.

  Args:
    params: boxed parameters (from `model.init`), or unboxed ones together with `model`, whose
      abstract parameters give the logical axis names.
  """
  leaves = jax.tree_util.tree_leaves(params, is_leaf=_is_boxed)
  if leaves and _is_boxed(leaves[0]):
    shardings = param_shardings(params, mesh, rules)
    params = nn.unbox(params)
  elif model is not None:
    shardings = param_shardings(model, mesh, rules)
  else:
    raise ValueError("shard_params needs boxed params (with logical axis names) or the `model` they belong to")
  return jax.device_put(params, shardings)


# --------------------------------------------------------------------------- batches and activations


def _batch_mesh_axes(mesh: Mesh, rules) -> tuple[str, ...]:
  """The mesh axes (of size > 1) that split the batch: those of `act_batch`, e.g. (data, fsdp)."""
  axes = logical_to_spec(("act_batch",), None, mesh, rules, what="the batch")[0]
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def batch_sharding(mesh: Mesh, rules=None) -> NamedSharding:
  """`NamedSharding` splitting the leading (batch) axis over `act_batch`'s mesh axes (data, fsdp)."""
  return NamedSharding(mesh, PartitionSpec(_batch_mesh_axes(mesh, rules) or None))


def shard_batch(batch: Any, mesh: Mesh, rules=None, batch_axis: int | Mapping[str, int | None] = 0,
                uneven_rows: str = "error") -> Any:
  """Global arrays from this process's own rows (`jax.make_array_from_process_local_data`).

  Args:
    batch: a pytree (usually a dict) of NumPy arrays holding this process's rows; with one
      process that is the whole batch.
    batch_axis: the axis holding rows, for all leaves or per top-level key (default 0), e.g.
      {"positions": 1} for M-RoPE ids [3, batch, length]; None replicates a leaf (every process
      must then pass the same value).
    uneven_rows: a leaf whose rows do not split evenly over this process's batch shards is an
      "error", or ("replicate") is gathered from every process (`gather_process_rows`) and
      replicated whole, e.g. a sampler's 2 prompts per process on 4 devices each.

  Raises:
    ValueError naming the leaf when its rows do not split evenly over this process's devices
    (uneven_rows="error").
  """
  if uneven_rows not in ("error", "replicate"):
    raise ValueError(f"uneven_rows={uneven_rows!r} must be 'error' or 'replicate'")
  axes = _batch_mesh_axes(mesh, rules)
  _, groups = process_shard_info(mesh, rules)
  local_shards = math.prod(mesh.shape[axis] for axis in axes) // groups
  replicated = NamedSharding(mesh, PartitionSpec())

  def put(path, leaf):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    top = jax.tree_util.keystr(path[:1], simple=True) if path else ""
    axis = batch_axis.get(top, 0) if isinstance(batch_axis, Mapping) else batch_axis
    leaf = np.asarray(leaf)
    if axis is None:
      return jax.make_array_from_process_local_data(replicated, leaf)
    if leaf.ndim <= axis:
      raise ValueError(f"batch leaf {name!r} has shape {leaf.shape}, with no batch axis {axis}")
    if leaf.shape[axis] % local_shards == 0:
      spec = PartitionSpec(*([None] * axis + [axes or None]))
      return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), leaf)
    if uneven_rows == "error":
      raise ValueError(f"batch leaf {name!r} has {leaf.shape[axis]} rows on this process, not divisible by the "
                       f"{local_shards} batch shards of its devices (mesh {dict(mesh.shape)}, batch over {axes})")
    rows = np.concatenate(gather_process_rows(np.moveaxis(leaf, axis, 0), mesh, rules))
    return jax.make_array_from_process_local_data(replicated, np.moveaxis(rows, 0, axis))

  return jax.tree_util.tree_map_with_path(put, batch)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=None) -> Iterator[Mesh]:
  """Makes `nn.with_logical_constraint` in the models act: sets the mesh and flax's axis rules.

  Trace (call for the first time) the jitted forward or train step inside this context; the
  constraints are baked in at trace time.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(_rules_or_default(rules)):
    yield mesh


# --------------------------------------------------------------------------- multi-host


def _env_count(name: str) -> int:
  try:
    return int(os.environ.get(name, "1"))
  except ValueError:
    return 1


def _tpu_process_count() -> int:
  """Processes of a Cloud TPU slice (GCE or GKE); 1 off TPU VMs.

  jax has no public probe for this; its own cluster detectors answer without touching the backend.
  """
  try:
    from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
  except ImportError:
    return 1
  for env in (cloud_tpu_cluster.GkeTpuCluster, cloud_tpu_cluster.GceTpuCluster):
    if env.is_env_present():
      return env.get_process_count()
  return 1


def launched_processes() -> int:
  """How many processes this run was launched with, read from the launcher's environment."""
  return max(_env_count("SLURM_NTASKS"), _env_count("OMPI_COMM_WORLD_SIZE"), _env_count("JAX_NUM_PROCESSES"),
             _tpu_process_count())


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None) -> bool:
  """Calls `jax.distributed.initialize` when the run spans several processes; else a no-op.

  Call it before anything else touches JAX. Several processes are detected from explicit
  arguments, the `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` environment,
  SLURM (`srun`), Open MPI, or a multi-host Cloud TPU slice; jax fills in whatever is not given.

  Returns:
    True when JAX is (now) initialised for several processes.
  """
  if jax.distributed.is_initialized():
    return True
  explicit = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  count = num_processes or launched_processes()
  if not explicit and count <= 1:
    return False
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids)
  _log.info("jax.distributed initialised: process %d of %d, %d of %d devices local", jax.process_index(),
            jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def process_shard_info(mesh: Mesh | None = None, rules=None) -> tuple[int, int]:
  """(index, count) of this process's part of the global batch, for the data loader.

  Without a mesh: (process index, process count). With one, processes whose devices hold the
  same batch rows (e.g. `tensor` spanning hosts) share an index, so they load the same data.

  Raises:
    ValueError when processes hold partly overlapping batch rows (a mesh the loader cannot split).
  """
  if mesh is None:
    return jax.process_index(), jax.process_count()
  groups = _process_groups(mesh, rules)
  return groups[jax.process_index()], len(set(groups.values()))


def _process_groups(mesh: Mesh, rules) -> dict[int, int]:
  """{process index: index of its part of the global batch} (see `process_shard_info`)."""
  batch_axes = _batch_mesh_axes(mesh, rules)
  positions = [mesh.axis_names.index(axis) for axis in batch_axes]
  sizes = [mesh.devices.shape[p] for p in positions]
  rows: dict[int, set[int]] = {}
  for coords, device in np.ndenumerate(mesh.devices):
    shard = int(np.ravel_multi_index([coords[p] for p in positions], sizes)) if sizes else 0
    rows.setdefault(device.process_index, set()).add(shard)
  groups = sorted({frozenset(s) for s in rows.values()}, key=min)
  if sum(len(g) for g in groups) != len(set().union(*groups)):
    raise ValueError(f"mesh {dict(mesh.shape)} gives processes partly overlapping batch shards "
                     f"({[sorted(g) for g in groups]}); make the batch axes {batch_axes} span whole processes")
  return {process: groups.index(frozenset(shards)) for process, shards in rows.items()}


def spans_processes(mesh: Mesh | None) -> bool:
  """Whether `mesh` has devices of several processes (its global arrays are not all readable here)."""
  return mesh is not None and len({device.process_index for device in mesh.devices.flat}) > 1


def process_values(values: Sequence[int]) -> np.ndarray:
  """int64 [processes, len(values)]: every process's `values`, by process index (a collective:
  every process calls it). Processes use it to agree on shapes, e.g. a padded length."""
  values = np.asarray(values, np.int32).reshape(-1)
  if jax.process_count() == 1:
    return values[None].astype(np.int64)
  return np.asarray(multihost_utils.process_allgather(values)).astype(np.int64)


def gather_process_rows(local: np.ndarray, mesh: Mesh, rules=None) -> list[np.ndarray]:
  """Every part of the global batch's `local` array, in global batch order (a collective).

  Each process passes the array of its own part (rows of any count along axis 0, e.g. its
  prompts' packed pixel values); the result lists one array per part, in the order in which
  `shard_batch` lays the parts out along the batch axis, so their concatenation lines up with
  the global rows. Processes holding the same part (`process_shard_info`) pass the same array;
  it appears once. With a mesh of this process's devices only: [local].

  Arrays of different row counts are padded to the longest for the all-gather (one gather of
  the counts, one of the padded arrays); shapes past axis 0 and dtypes must agree.
  """
  local = np.asarray(local)
  if not spans_processes(mesh):
    return [local]
  counts = np.asarray(multihost_utils.process_allgather(np.int32(len(local))))
  padded = np.zeros((int(counts.max()),) + local.shape[1:], local.dtype)
  padded[:len(local)] = local
  everything = np.asarray(multihost_utils.process_allgather(padded))  # [processes, longest, ...]
  first_process = {}
  for process, part in sorted(_process_groups(mesh, rules).items()):
    first_process.setdefault(part, process)
  return [everything[p][:counts[p]] for _, p in sorted(first_process.items())]


def process_rows(array: jax.Array, mesh: Mesh, rules=None, axis: int = 0) -> np.ndarray:
  """This process's part of a global array whose `axis` holds the global batch's rows (host NumPy).

  The inverse of `shard_batch` for outputs the host needs (sampled tokens, log-probs): with
  several processes the array spans devices this process cannot read, so `np.asarray` fails;
  it is all-gathered (whatever its sharding) and this process's rows are cut out. With one
  process: all of it.
  """
  index, count = process_shard_info(mesh, rules)
  full = np.asarray(array if array.is_fully_addressable else multihost_utils.process_allgather(array, tiled=True))
  rows = full.shape[axis] // count
  return np.take(full, np.arange(index * rows, (index + 1) * rows), axis=axis)
