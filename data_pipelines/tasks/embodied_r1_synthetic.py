"""A synthetic tabletop pointing task in Embodied-Points-200K's row layout (embodied_r1.py).

A scene is a `grid_size` x `grid_size` table of tiles (one shade per cell) seen from above, `image_size`
pixels square, with one
object of each of `num_colors` colours (a circle, square or triangle) in distinct cells, each
shifted by up to `jitter` pixels from its cell's centre. Each record asks one thing about it:

  task type          instruction (one `<image>`)                              ground truth (answer)
  point_rec          "Point at the red object."                               polygon of the object
  fsd_free_point     "Point at free space left of the red object."            the empty neighbour cell as
                                                                              bbox + 8 free points in it
  fsd_visual_trace   "Draw the trace from the red object to the blue object." 8 points from centre to centre
  spatial_qa         "Is the red object left of the blue object?"            yes / no

The answers use the released `<type>TYPE</type>` + JSON ground truth, so the same reader, reward and
metrics serve the synthetic task and the released data. Coordinates are integer pixels of the image
(which the processor keeps as it is when its side is a multiple of 28), as Embodied-R1's points are
pixels of the model-input image.

SFT targets ('response') give a brief reasoning, each object named by its colour then its cell ("top
left" ... "bottom right", "center" for the middle one; a free-space answer adds the free cell), then the
answer:

    <think>red top left</think><answer><point>[[15, 12]]</point></answer>
    <think>blue center; middle left</think><answer><point>[[14, 42]]</point></answer>

Naming the colour right before its cell lets the model find the object by that colour's token alone;
a mixed-up teacher names the wrong colour.

An imperfect teacher leaves RL headroom: for the colours of `teacher_confusions` ({asked: taken})
the teacher resolves the instruction to the object of the other colour with probability
`teacher_confusion` (an annotator that mixes up two colours), in every pointing task. The
reference answer ('answer') is always the true one.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

COLORS = {"red": (220, 40, 40), "green": (30, 170, 60), "blue": (40, 80, 230), "yellow": (240, 210, 30),
          "cyan": (40, 210, 220), "purple": (150, 60, 200)}
SHAPES = ("circle", "square", "triangle")
# The table's tiles, one shade per cell in reading order (cells past nine reuse them): a vision token
# then shows both an object and where it stands, so pointing needs no decoding of positions from M-RoPE
# phases, which a 2-layer model trained from scratch does not learn within the CPU budget.
TILES = ((100, 90, 80), (140, 130, 120), (180, 170, 160), (90, 100, 120), (130, 140, 160), (170, 180, 200),
         (110, 120, 90), (150, 160, 130), (190, 200, 170))
TASK_TYPES = ("point_rec", "fsd_free_point", "fsd_visual_trace", "spatial_qa")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
TRACE_POINTS = 8
FREE_POINTS = 8
VISION_FACTOR = 28  # Qwen2.5-VL: patch 14 x spatial merge 2
_CIRCLE_SIDES = 16
# The instruction the released prompts end with (Embodied-R1's eval scripts; the training rows'
# `problem` carries an instruction of this kind after the question).
POINT_INSTRUCTION = ("You FIRST think about the reasoning process as an internal monologue and then provide the "
                     "final answer. The reasoning process and answer are enclosed within <think> </think> and "
                     "<answer> </answer> tags. The answer consists only of several coordinate points, with the "
                     "overall format being: <think> reasoning process here </think><answer><point>[[x1, y1], "
                     "[x2, y2], ...]</point></answer>")
QA_INSTRUCTION = ("You FIRST think about the reasoning process as an internal monologue and then provide the final "
                  "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
                  "</answer> tags.")
PROMPT_STYLES = ("full", "short")


@dataclasses.dataclass(frozen=True)
class TabletopTask:
  """What the generator draws from; the defaults are sized for a tiny model on CPU.

  Attributes:
    image_size: side in pixels, a multiple of 28 (so the processor keeps the image as it is).
    grid_size: cells per side; at 84 pixels and 3 cells, one cell is one merged vision token.
    num_colors: objects per scene, one per colour: the first `num_colors` of COLORS.
    radius: circumradius of every object in pixels.
    jitter: objects sit up to this many pixels off their cell's centre.
    task_types: the record kinds drawn (uniformly), from TASK_TYPES.
    teacher_confusions: (asked colour, colour the teacher takes instead) pairs.
    teacher_confusion: probability of that mix-up in an SFT target.
    prompt_style: 'full' appends the released answer-format instruction; 'short' leaves it out
      (a model trained from scratch learns the format from SFT).
    min_objects: 0: every scene holds all `num_colors` objects; else a scene holds between `min_objects`
      and `num_colors` of them (uniformly), a random subset of the colours. Scenes with one object teach
      a tiny model where an object stands (it reads that off the whole image); scenes with several make
      it find the named one.
    instruction_first: the instruction before the `<image>` tag instead of after it. The decoder is
      causal: only then do the image's tokens see which object is asked for, so each can mark itself
      as the named object or not, and the answer reads the marked one; after the image, the answer
      must pick the named object's token by attention alone, which a 2-layer model trained from
      scratch does not learn within the CPU budget (it learns to point at a scene's only object).
  """
  image_size: int = 84
  grid_size: int = 3
  num_colors: int = 4
  radius: float = 10.0
  jitter: int = 3
  task_types: tuple[str, ...] = TASK_TYPES
  teacher_confusions: tuple[tuple[str, str], ...] = (("blue", "green"), ("yellow", "red"))
  teacher_confusion: float = 0.0
  prompt_style: str = "full"
  min_objects: int = 0
  instruction_first: bool = False

  def __post_init__(self):
    object.__setattr__(self, "task_types", tuple(self.task_types))
    object.__setattr__(self, "teacher_confusions", tuple(tuple(pair) for pair in self.teacher_confusions))
    if self.image_size < VISION_FACTOR or self.image_size % VISION_FACTOR:
      raise ValueError(f"embodied_r1 option image_size={self.image_size} must be a positive multiple of "
                       f"{VISION_FACTOR} (so the processor does not resize it)")
    if not 2 <= self.num_colors <= min(len(COLORS), self.grid_size ** 2 - 1):
      raise ValueError(f"embodied_r1 option num_colors={self.num_colors} must be in [2, "
                       f"{min(len(COLORS), self.grid_size ** 2 - 1)}] (one object per colour, a free cell left)")
    if self.radius <= 0 or self.jitter < 0 or self.radius + self.jitter > self.cell / 2:
      raise ValueError(f"embodied_r1 options radius={self.radius} and jitter={self.jitter} must keep every "
                       f"object inside its {self.cell:g}-pixel cell")
    unknown = sorted(set(self.task_types) - set(TASK_TYPES))
    if not self.task_types or unknown:
      raise ValueError(f"embodied_r1 option task_types={self.task_types} must be a non-empty subset of {TASK_TYPES}")
    colors = set(self.colors)
    for asked, taken in self.teacher_confusions:
      if asked not in colors or taken not in colors or asked == taken:
        raise ValueError(f"embodied_r1 option teacher_confusions={self.teacher_confusions}: each pair must name "
                         f"two different colours of {self.colors}")
    if not 0 <= self.min_objects <= self.num_colors:
      raise ValueError(f"embodied_r1 option min_objects={self.min_objects} must be in [0, num_colors="
                       f"{self.num_colors}] (0: always num_colors objects)")
    if not 0 <= self.teacher_confusion <= 1:
      raise ValueError(f"embodied_r1 option teacher_confusion={self.teacher_confusion} must be in [0, 1]")
    if self.prompt_style not in PROMPT_STYLES:
      raise ValueError(f"embodied_r1 option prompt_style={self.prompt_style!r} must be one of {PROMPT_STYLES}")

  @property
  def cell(self) -> float:
    return self.image_size / self.grid_size

  @property
  def colors(self) -> tuple[str, ...]:
    return tuple(COLORS)[:self.num_colors]

  def cell_name(self, cell: tuple[int, int]) -> str:
    """(row, col) -> 'top left', ..., 'center' (3 x 3), or 'row R col C' on other grids."""
    if self.grid_size != 3:
      return f"row {cell[0] + 1} col {cell[1] + 1}"
    name = f"{('top', 'middle', 'bottom')[cell[0]]} {('left', 'middle', 'right')[cell[1]]}"
    return "center" if name == "middle middle" else name


@dataclasses.dataclass(frozen=True)
class TabletopObject:
  """One object: its colour, shape, cell (row, col) and centre (x, y) in pixels."""
  color: str
  shape: str
  cell: tuple[int, int]
  center: tuple[float, float]

  def polygon(self, radius: float) -> list[tuple[float, float]]:
    """The outline as (x, y) pixel vertices; circles as a 16-gon (what is drawn and scored)."""
    x, y = self.center
    if self.shape == "square":
      half = radius / math.sqrt(2)
      return [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half)]
    sides, start = (3, -90.0) if self.shape == "triangle" else (_CIRCLE_SIDES, 0.0)
    return [(x + radius * math.cos(math.radians(start + 360 * k / sides)),
             y + radius * math.sin(math.radians(start + 360 * k / sides))) for k in range(sides)]


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[TabletopObject, ...]

  @property
  def colors(self) -> tuple[str, ...]:
    return tuple(o.color for o in self.objects)

  def by_color(self, color: str) -> TabletopObject:
    return next(o for o in self.objects if o.color == color)

  def occupied(self) -> set[tuple[int, int]]:
    return {o.cell for o in self.objects}


def sample_scene(rng: np.random.Generator, task: TabletopTask) -> Scene:
  colors = task.colors
  if task.min_objects:
    count = int(rng.integers(task.min_objects, task.num_colors + 1))
    colors = tuple(colors[i] for i in sorted(rng.choice(task.num_colors, count, replace=False)))
  cells = rng.choice(task.grid_size ** 2, len(colors), replace=False)
  objects = []
  for color, index in zip(colors, cells):
    row, col = divmod(int(index), task.grid_size)
    dx, dy = rng.integers(-task.jitter, task.jitter + 1, size=2)
    center = ((col + 0.5) * task.cell + float(dx), (row + 0.5) * task.cell + float(dy))
    objects.append(TabletopObject(color, SHAPES[rng.integers(len(SHAPES))], (row, col), center))
  return Scene(tuple(objects))


def tile_color(cell: tuple[int, int], grid_size: int) -> tuple[int, int, int]:
  return TILES[(cell[0] * grid_size + cell[1]) % len(TILES)]


def render(scene: Scene, task: TabletopTask) -> np.ndarray:
  """uint8 [image_size, image_size, 3]: the tiled table and its objects, exact palette colours."""
  image = PIL.Image.new("RGB", (task.image_size, task.image_size))
  draw = PIL.ImageDraw.Draw(image)
  for row in range(task.grid_size):
    for col in range(task.grid_size):
      x1, y1, x2, y2 = _cell_box((row, col), task)
      draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=tile_color((row, col), task.grid_size))
  for obj in scene.objects:
    draw.polygon(obj.polygon(task.radius), fill=COLORS[obj.color])
  return np.asarray(image)


def encode_png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def _round(point: Sequence[float]) -> list[int]:
  return [int(round(point[0])), int(round(point[1]))]


def _points_text(points: Sequence[Sequence[int]]) -> str:
  return json.dumps([list(p) for p in points])


def trace(start: Sequence[float], end: Sequence[float]) -> list[list[int]]:
  """TRACE_POINTS integer points evenly spaced from `start` to `end`, both included."""
  return [_round((start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t))
          for t in np.linspace(0.0, 1.0, TRACE_POINTS)]


@dataclasses.dataclass(frozen=True)
class Item:
  """One question about a scene before rendering.

  Attributes:
    task_type: one of TASK_TYPES.
    colors: the colours the instruction names (1, or 2 for traces and QA).
    relation: a RELATIONS key (free space and QA), else ''.
  """
  task_type: str
  colors: tuple[str, ...]
  relation: str = ""


def _free_cell(scene: Scene, obj: TabletopObject, relation: str, grid_size: int) -> tuple[int, int] | None:
  """The cell next to `obj` in direction `relation`, if it is on the table and empty."""
  dr, dc = RELATIONS[relation]
  cell = (obj.cell[0] + dr, obj.cell[1] + dc)
  inside = 0 <= cell[0] < grid_size and 0 <= cell[1] < grid_size
  return cell if inside and cell not in scene.occupied() else None


def _holds(scene: Scene, item: Item) -> bool:
  """QA: whether the first object stands in `relation` to the second (strictly, by cell)."""
  a, b = (scene.by_color(c).cell for c in item.colors)
  dr, dc = RELATIONS[item.relation]
  return (a[1] - b[1]) * dc > 0 if dc else (a[0] - b[0]) * dr > 0


def sample_item(rng: np.random.Generator, scene: Scene, task: TabletopTask, task_type: str) -> Item | None:
  """A question of `task_type` about `scene`, or None when the scene has none (free space; two objects
  for traces and QA)."""
  colors = scene.colors
  if task_type == "point_rec":
    return Item(task_type, (colors[rng.integers(len(colors))],))
  if task_type in ("fsd_visual_trace", "spatial_qa"):
    if len(colors) < 2:
      return None
    pair = tuple(str(c) for c in rng.choice(colors, 2, replace=False))
    relation = tuple(RELATIONS)[rng.integers(len(RELATIONS))] if task_type == "spatial_qa" else ""
    return Item(task_type, pair, relation)
  options = [(c, r) for c in colors for r in RELATIONS
             if _free_cell(scene, scene.by_color(c), r, task.grid_size) is not None]
  if not options:
    return None
  color, relation = options[rng.integers(len(options))]
  return Item(task_type, (color,), relation)


def instruction(item: Item) -> str:
  if item.task_type == "point_rec":
    return f"Point at the {item.colors[0]} object."
  if item.task_type == "fsd_free_point":
    return f"Point at free space {item.relation} the {item.colors[0]} object."
  if item.task_type == "fsd_visual_trace":
    return f"Draw the trace from the {item.colors[0]} object to the {item.colors[1]} object."
  return f"Is the {item.colors[0]} object {item.relation} the {item.colors[1]} object?"


def prompt_text(item: Item, task: TabletopTask) -> str:
  """`problem`: the image tag, the instruction and (style 'full') the released format instruction; the tag
  last under `instruction_first`."""
  text = instruction(item)
  if task.prompt_style == "full":
    text += "\n" + (QA_INSTRUCTION if item.task_type == "spatial_qa" else POINT_INSTRUCTION)
  return text + "<image>" if task.instruction_first else "<image>" + text


def _cell_box(cell: tuple[int, int], task: TabletopTask) -> list[int]:
  """[x1, y1, x2, y2] of a cell in integer pixels."""
  return [int(round(cell[1] * task.cell)), int(round(cell[0] * task.cell)),
          int(round((cell[1] + 1) * task.cell)), int(round((cell[0] + 1) * task.cell))]


def _free_points(rng: np.random.Generator, box: Sequence[int], count: int) -> list[list[int]]:
  """`count` integer points drawn inside `box`, at least 3 pixels from its border."""
  x1, y1, x2, y2 = box
  return [[int(rng.integers(x1 + 3, x2 - 2)), int(rng.integers(y1 + 3, y2 - 2))] for _ in range(count)]


def answer_text(rng: np.random.Generator, scene: Scene, item: Item, task: TabletopTask) -> str:
  """The released ground truth: `<type>TYPE</type>` + the task's JSON (or the QA answer)."""
  head = f"<type>{item.task_type}</type>"
  if item.task_type == "spatial_qa":
    return head + ("yes" if _holds(scene, item) else "no")
  if item.task_type == "point_rec":
    polygon = [_round(p) for p in scene.by_color(item.colors[0]).polygon(task.radius)]
    return head + json.dumps({"segmentation": polygon})
  if item.task_type == "fsd_visual_trace":
    start, end = (scene.by_color(c).center for c in item.colors)
    return head + json.dumps({"trajectory": trace(start, end)})
  box = _cell_box(_free_cell(scene, scene.by_color(item.colors[0]), item.relation, task.grid_size), task)
  return head + json.dumps({"bbox": box, "free_points": _free_points(rng, box, FREE_POINTS)})


def _teacher_color(rng: np.random.Generator, scene: Scene, color: str, task: TabletopTask) -> str:
  """The colour the teacher resolves `color` to; a mix-up needs the other colour's object in the scene."""
  confused = dict(task.teacher_confusions).get(color)
  mixed_up = confused is not None and rng.random() < task.teacher_confusion
  return confused if mixed_up and confused in scene.colors else color


def sft_target(rng: np.random.Generator, scene: Scene, item: Item, task: TabletopTask) -> str:
  """The teacher's completion (see the module docstring; it may mix up colours)."""
  if item.task_type == "spatial_qa":
    a, b = (scene.by_color(c) for c in item.colors)
    think = f"{a.color} {task.cell_name(a.cell)}, {b.color} {task.cell_name(b.cell)}"
    return f"<think>{think}</think><answer>{'yes' if _holds(scene, item) else 'no'}</answer>"
  objects = [scene.by_color(_teacher_color(rng, scene, c, task)) for c in item.colors]
  if item.task_type == "fsd_free_point" and _free_cell(scene, objects[0], item.relation, task.grid_size) is None:
    objects = [scene.by_color(item.colors[0])]  # the mixed-up object has no free cell on that side
  located = [f"{o.color} {task.cell_name(o.cell)}" for o in objects]
  if item.task_type == "point_rec":
    think, points = located[0], [_round(objects[0].center)]
  elif item.task_type == "fsd_visual_trace":
    think, points = f"{located[0]} to {located[1]}", trace(objects[0].center, objects[1].center)
  else:
    cell = _free_cell(scene, objects[0], item.relation, task.grid_size)
    x1, y1, x2, y2 = _cell_box(cell, task)
    think, points = f"{located[0]}; {task.cell_name(cell)}", [[(x1 + x2) // 2, (y1 + y2) // 2]]
  return f"<think>{think}</think><answer><point>{_points_text(points)}</point></answer>"


def generate_record(rng: np.random.Generator, task: TabletopTask, task_type: str | None = None,
                    example_id: str | None = None) -> dict[str, Any]:
  """One rendered record in the released row layout, plus the SFT target.

  Returns:
    dict with 'problem' (one `<image>` tag), 'answer' (`<type>TYPE</type>` + ground truth), 'images'
    ([{'bytes': PNG, 'path': None}], as HF `datasets` writes images into Parquet), 'data_type'
    ('image'), 'response' (the SFT target) and 'id' when given.
  """
  kind = task_type or task.task_types[rng.integers(len(task.task_types))]
  while True:  # a scene without a free neighbour cell (or two objects) has no such question: redraw
    scene = sample_scene(rng, task)
    item = sample_item(rng, scene, task, kind)
    if item is not None:
      break
  record = {"problem": prompt_text(item, task), "answer": answer_text(rng, scene, item, task),
            "images": [{"bytes": encode_png(render(scene, task)), "path": None}], "data_type": "image",
            "response": sft_target(rng, scene, item, task)}
  if example_id is not None:
    record["id"] = example_id
  return record


# The words Qwen2.5-VL's chat template puts around every prompt.
_CHAT_TEMPLATE_WORDS = "system\nYou are a helpful assistant.\nuser\nassistant\n"


def text_corpus(task: TabletopTask = TabletopTask(), num_examples: int = 400, seed: int = 0) -> list[str]:
  """Prompts, answers and SFT targets of `num_examples` records (both prompt styles) to build a tokenizer."""
  rng = np.random.default_rng(seed)
  texts = [_CHAT_TEMPLATE_WORDS, POINT_INSTRUCTION, QA_INSTRUCTION]
  for i in range(num_examples):
    scene = sample_scene(rng, task)
    item = sample_item(rng, scene, task, TASK_TYPES[i % len(TASK_TYPES)])
    if item is None:
      continue
    texts += [instruction(item), answer_text(rng, scene, item, task), sft_target(rng, scene, item, task)]
  return texts
