"""A synthetic GUI world for InfiGUI-R1: phone screens rendered with PIL, a state machine, and
multi-step episodes written in AndroidControl's episode layout (infigui_r1.py reads them back).

The phone: a `width` x `height` screen (default 84 x 168: 3 x 6 merged vision tokens of 28 px) of
six horizontal bands of 28 px. Band 0 is the title bar (the app's name, white on black); bands 1-5
are slots, each holding at most one widget. Widgets are large (72 x 16 px, a band's width less
the margins) and of four kinds, all with a text label drawn in the middle:

  button  a filled rectangle in the widget's colour (also app rows on the home screen and contacts);
  toggle  the same with a knob at its right end, white when on, black when off;
  field   a white box framed in the widget's colour, showing its text (grey placeholder when empty,
          a black bar at its left edge when focused);
  (list)  the Contacts list is eight buttons of which five are visible; a scroll shows the rest.

Why it looks like this (what a tiny model on a random, frozen vision tower can learn): it reads a
vision token's colour easily but not where the token is (rotary positions steer attention, they do
not enter the values). So every widget on a screen has its own saturated colour, which the step
instruction names ("Tap the green Wi-Fi switch"), and the background of each band is its own grey
(darker at the top, 40 levels a band), framing the widget in 6 px margins above and below: the
pixels of a widget's tokens say both what it is and which band it is in. The click point is then
one of five rows (x is the screen's centre), and the 1.2x-enlarged widget box accepts a click
anywhere in its band.

State machine (`Phone.act`): the home screen lists five apps; `open_app` opens one (whatever is on
screen); in an app, `click` on a toggle flips it, on a field focuses it, on a button to a page opens
the page (Display, Sound, Battery in Settings), on Send / Search clears the fields; `input_text`
types into the focused field (ignored without one); `scroll` down / up moves the Contacts list by
three rows; `navigate_back` leaves a page (or the app), `navigate_home` goes home; a click outside
every widget does nothing. The world is deterministic: the same state and action give the same
screen.

Episodes (`sample_episode`): a high-level goal from one of seven templates (toggle a setting, a
setting on a page, send a message, search the store, call a contact after scrolling, look at a page
and go back, switch an alarm), 2-6 steps, each with a step instruction and the ground-truth action
in AndroidControl's format:

    {"action_type": "click", "x": 42, "y": 98}      {"action_type": "input_text", "text": "hello"}
    {"action_type": "open_app", "app_name": "Settings"}  {"action_type": "scroll", "direction": "down"}
    {"action_type": "navigate_back"}

Colours, slots, apps on the home screen, toggle states, contacts and texts are drawn per episode.

Record (one per episode, AndroidControl's fields; infigui_r1.py's module docstring has the layout):
`episode_id`, `goal`, `screenshots` (PNG files, one more than the actions: the last is the screen
after the last action), `screenshot_widths`, `screenshot_heights`, `actions` (JSON strings),
`step_instructions`, `accessibility_trees` (here a JSON list of the screen's elements, `bounds`
[x1, y1, x2, y2], `text`, `class`, `clickable`, per screenshot; AndroidControl stores a proto), and,
for the SFT data, `teacher_responses`: the reasoning-injection target of each step, written by an
imperfect teacher (`teacher_error` of its clicks hit the widget in the next band, and of its typed
texts are another word), in InfiGUI-R1's output format:

    <think><step>Tap the green Wi-Fi switch</step></think><tool_call>{"name": "mobile_use", "arguments": {"action": "click", "coordinate": [42, 98]}}</tool_call>

Splits: 'test' episodes are fixed (they ignore the seed); 'train' episode i is drawn from (seed, i)
and drawn again while its `key` (template, goal, slots and colours of the first app screen) equals
one of the first `test_size` test episodes'.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from data_pipelines.tasks import infigui_r1, tvr
from data_pipelines.tasks.synthetic import items_apart_from, written_with

SPLITS = ("train", "test")
BAND = 28  # px: one merged vision token (patch 14 x merge 2)
SLOTS = 5  # widget bands below the title bar
MARGIN_X, MARGIN_Y = 6, 6
COLORS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 230), "yellow": (235, 215, 20),
          "purple": (150, 40, 200), "orange": (245, 130, 10), "cyan": (20, 200, 210), "pink": (245, 90, 180)}
TITLE_BAR = (0, 0, 0)
BAND_GREYS = tuple(40 + 40 * slot for slot in range(SLOTS))  # slot 0 (band 1) darkest
KINDS = ("button", "toggle", "field")
APPS = ("Settings", "Messages", "Store", "Contacts", "Clock", "Notes", "Camera", "Maps")
HOME_APPS = 5
SETTINGS = (("Wi-Fi", "toggle"), ("Bluetooth", "toggle"), ("Airplane", "toggle"), ("Dark mode", "toggle"),
            ("Display", "button"), ("Sound", "button"), ("Battery", "button"))
PAGES = {"Display": ("Brightness", "Auto-rotate", "Night light"), "Sound": ("Vibrate", "Ringtone", "Silent"),
         "Battery": ("Saver", "Percentage", "Adaptive")}
CONTACTS = ("Ann", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Zoe")
VISIBLE_CONTACTS = 5
SCROLL_ROWS = 3
WORDS = ("hello", "lunch", "maps", "music", "later", "photos", "news", "games", "thanks", "weather")
ALARMS = ("7:00", "8:30", "9:15")
TEMPLATES = ("toggle", "page_toggle", "message", "search", "contact", "page_back", "alarm")
_SPLIT_TAGS = {"train": 0x4755_4900, "test": 0x4755_4901}
_TEST_SEED = 0
_TEACHER_STREAM = 1  # the teacher's own random stream: episodes do not move when it changes


@dataclasses.dataclass(frozen=True)
class GuiTask:
  """The screen's size in pixels (a multiple of 28 both ways; six bands tall)."""
  width: int = 84
  height: int = 168

  def __post_init__(self):
    if self.width % 28 or self.width < 56 or self.height != BAND * (SLOTS + 1):
      raise ValueError(f"GUI task: width={self.width} must be a multiple of 28 (>= 56) and height={self.height} "
                       f"must be {BAND * (SLOTS + 1)} (a title bar and {SLOTS} bands of {BAND} px)")


@dataclasses.dataclass
class Widget:
  """One widget on a screen; `slot` 0..SLOTS-1 is its band below the title bar."""
  label: str
  kind: str
  color: str
  slot: int
  on: bool = False  # toggles
  text: str = ""  # fields
  target: str = ""  # buttons: the page or effect they open ("page:Display", "send", "search", "call")

  def box(self, task: GuiTask) -> list[int]:
    """[x1, y1, x2, y2] pixels of the widget."""
    top = BAND * (self.slot + 1)
    return [MARGIN_X, top + MARGIN_Y, task.width - MARGIN_X, top + BAND - MARGIN_Y]

  def center(self, task: GuiTask) -> tuple[int, int]:
    return task.width // 2, BAND * (self.slot + 1) + BAND // 2


@dataclasses.dataclass
class Screen:
  """What an app (or a page of it) shows: a title and its widgets (Contacts: the whole list)."""
  title: str
  widgets: list[Widget]
  scroll: int = 0  # Contacts: first visible row
  focused: str = ""  # the label of the focused field


class Phone:
  """The state machine: the home screen, the apps the episode set up, and the screen stack."""

  def __init__(self, home: list[Widget], apps: dict[str, Screen], pages: dict[str, Screen]):
    self.home, self.apps, self.pages = Screen("Home", home), apps, pages
    self.stack: list[Screen] = [self.home]

  @property
  def screen(self) -> Screen:
    return self.stack[-1]

  def visible(self) -> list[Widget]:
    """The widgets on screen, in their bands (the Contacts list shifted by its scroll)."""
    screen = self.screen
    if screen.title != "Contacts":
      return screen.widgets
    shown = screen.widgets[screen.scroll:screen.scroll + VISIBLE_CONTACTS]
    return [dataclasses.replace(w, slot=i) for i, w in enumerate(shown)]

  def widget(self, label: str) -> Widget:
    for widget in self.visible():
      if widget.label == label:
        return widget
    raise KeyError(f"no widget {label!r} on screen {self.screen.title!r}")

  def act(self, action: dict[str, Any], task: GuiTask) -> None:
    """Applies one AndroidControl action (see the module docstring)."""
    kind = action["action_type"]
    screen = self.screen
    if kind == "open_app" and action["app_name"] in self.apps:
      self.stack = [self.home, self.apps[action["app_name"]]]
    elif kind == "navigate_back" and len(self.stack) > 1:
      self.stack.pop()
    elif kind == "navigate_home":
      self.stack = [self.home]
    elif kind == "scroll" and screen.title == "Contacts":
      step = SCROLL_ROWS if action["direction"] == "down" else -SCROLL_ROWS
      screen.scroll = int(np.clip(screen.scroll + step, 0, len(screen.widgets) - VISIBLE_CONTACTS))
    elif kind == "input_text" and screen.focused:
      next(w for w in screen.widgets if w.label == screen.focused).text = action["text"]
    elif kind in ("click", "long_press"):
      hit = [w for w in self.visible() if _inside((action["x"], action["y"]), w.box(task))]
      if hit:
        self._click(next(w for w in screen.widgets if w.label == hit[0].label))

  def _click(self, widget: Widget) -> None:
    screen = self.screen
    if widget.kind == "toggle":
      widget.on = not widget.on
    elif widget.kind == "field":
      screen.focused = widget.label
    elif widget.target.startswith("page:"):
      self.stack.append(self.pages[widget.target[len("page:"):]])
    elif widget.target in ("send", "search"):
      for field in screen.widgets:
        field.text = "" if field.kind == "field" else field.text
      screen.focused = ""


def _inside(point, box) -> bool:
  return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


_FONT = None


def _font():
  global _FONT
  if _FONT is None:
    _FONT = PIL.ImageFont.load_default()
  return _FONT


def render(phone: Phone, task: GuiTask) -> np.ndarray:
  """uint8 [height, width, 3] screenshot of the phone's current screen."""
  image = PIL.Image.new("RGB", (task.width, task.height))
  draw = PIL.ImageDraw.Draw(image)
  draw.rectangle([0, 0, task.width - 1, BAND - 1], fill=TITLE_BAR)
  draw.text((4, 8), phone.screen.title[:12], fill=(255, 255, 255), font=_font())
  for slot in range(SLOTS):
    top = BAND * (slot + 1)
    draw.rectangle([0, top, task.width - 1, top + BAND - 1], fill=(BAND_GREYS[slot],) * 3)
  focused = phone.screen.focused
  for widget in phone.visible():
    x1, y1, x2, y2 = widget.box(task)
    color = COLORS[widget.color]
    if widget.kind == "field":
      draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=(255, 255, 255), outline=color, width=3)
      text, ink = (widget.text, (0, 0, 0)) if widget.text else (widget.label, (150, 150, 150))
      if widget.label == focused:
        draw.rectangle([x1 + 4, y1 + 4, x1 + 5, y2 - 5], fill=(0, 0, 0))
    else:
      draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=color)
      text, ink = widget.label, (0, 0, 0)
      if widget.kind == "toggle":
        draw.rectangle([x2 - 16, y1 + 3, x2 - 5, y2 - 4], fill=(255, 255, 255) if widget.on else (0, 0, 0))
    draw.text((x1 + 8, y1 + 2), text[:9], fill=ink, font=_font())
  return np.asarray(image)


def elements(phone: Phone, task: GuiTask) -> list[dict[str, Any]]:
  """The screen's elements as an accessibility-tree list (bounds, text, class, clickable)."""
  classes = {"button": "android.widget.Button", "toggle": "android.widget.Switch", "field": "android.widget.EditText"}
  return [{"bounds": w.box(task), "text": w.text or w.label, "class": classes[w.kind], "clickable": True}
          for w in phone.visible()]


@dataclasses.dataclass(frozen=True)
class Step:
  instruction: str
  action: dict[str, Any]  # AndroidControl's format
  subgoal: str  # what the teacher's <step> states: the step instruction, word for word (a tiny model copies it
  # token by token; a paraphrase such as "tap orange 7:00" for "Tap the orange 7:00 alarm" it did not learn to write)
  distractor: dict[str, Any] | None = None  # the imperfect teacher's wrong action for this step


@dataclasses.dataclass
class Episode:
  template: str
  goal: str
  steps: list[Step]
  screens: list[np.ndarray]  # len(steps) + 1
  trees: list[list[dict[str, Any]]]
  key: tuple  # what makes two episodes the same (held-out separation)
  phones: list[Phone] = dataclasses.field(default_factory=list)  # the state before each step (copies)


def _pick(rng: np.random.Generator, values, k=None):
  if k is None:
    return values[int(rng.integers(len(values)))]
  return [values[i] for i in rng.choice(len(values), k, replace=False)]


def _place(rng, specs: list[tuple[str, str, str]], colors: list[str]) -> list[Widget]:
  """Widgets for (label, kind, target) specs in distinct random slots with distinct colours."""
  slots = sorted(rng.choice(SLOTS, len(specs), replace=False).tolist())
  order = rng.permutation(len(specs))
  return [Widget(label, kind, colors[i], int(slots[int(order[i])]), target=target)
          for i, (label, kind, target) in enumerate(specs)]


def _build_world(rng: np.random.Generator, template: str) -> tuple[Phone, dict[str, Any]]:
  """A phone with the app the template needs on its home screen, and the template's choices."""
  colors = list(rng.permutation(list(COLORS)))
  app = {"toggle": "Settings", "page_toggle": "Settings", "page_back": "Settings", "message": "Messages",
         "search": "Store", "contact": "Contacts", "alarm": "Clock"}[template]
  others = _pick(rng, [a for a in APPS if a != app], HOME_APPS - 1)
  home_apps = [app, *others]
  home = _place(rng, [(name, "button", f"app:{name}") for name in home_apps], colors)
  colors = list(rng.permutation(list(COLORS)))
  settings_specs = [(label, kind, f"page:{label}" if kind == "button" else "")
                    for label, kind in _pick(rng, SETTINGS, 4)]
  if template in ("page_toggle", "page_back") and not any(t for _, _, t in settings_specs):
    page = _pick(rng, list(PAGES))
    settings_specs[int(rng.integers(4))] = (page, "button", f"page:{page}")
  apps = {"Settings": Screen("Settings", _place(rng, settings_specs, colors)),
          "Messages": Screen("Messages", _place(rng, [("To", "field", ""), ("Message", "field", ""),
                                                      ("Send", "button", "send"), ("Attach", "button", "")], colors)),
          "Store": Screen("Store", _place(rng, [("Search", "field", ""), ("Go", "button", "search"),
                                                ("Top apps", "button", ""), ("Updates", "button", "")], colors)),
          "Clock": Screen("Clock", _place(rng, [(a, "toggle", "") for a in ALARMS] + [("Timer", "button", "")],
                                          colors))}
  contacts = list(rng.permutation(list(CONTACTS)))
  apps["Contacts"] = Screen("Contacts", [Widget(name, "button", colors[i], i, target="call")
                                         for i, name in enumerate(contacts)])
  for screen in apps.values():
    for widget in screen.widgets:
      widget.on = widget.kind == "toggle" and bool(rng.integers(2))
  pages = {name: Screen(name, _place(rng, [(label, "toggle", "") for label in labels], colors))
           for name, labels in PAGES.items()}
  for screen in pages.values():
    for widget in screen.widgets:
      widget.on = bool(rng.integers(2))
  return Phone(home, apps, pages), {"app": app, "home": home_apps}


def _neighbour_click(phone: Phone, label: str, task: GuiTask, rng: np.random.Generator) -> dict[str, Any]:
  """The click an imperfect teacher makes instead: the widget in the nearest other occupied band."""
  target = phone.widget(label)
  others = [w for w in phone.visible() if w.label != label]
  distance = min(abs(w.slot - target.slot) for w in others)
  nearest = [w for w in others if abs(w.slot - target.slot) == distance]
  x, y = _pick(rng, nearest).center(task)
  return {"action_type": "click", "x": x, "y": y}


def _click_step(phone, label, noun, task, rng) -> Step:
  widget = phone.widget(label)
  x, y = widget.center(task)
  instruction = f"Tap the {widget.color} {label} {noun}"
  return Step(instruction, {"action_type": "click", "x": x, "y": y}, instruction,
              _neighbour_click(phone, label, task, rng))


def _type_step(text, field, rng) -> Step:
  wrong = _pick(rng, [w for w in WORDS + CONTACTS if w != text])
  instruction = f"Type {text} in the {field} field"
  return Step(instruction, {"action_type": "input_text", "text": text}, instruction,
              {"action_type": "input_text", "text": wrong})


def _plan(phone: Phone, template: str, choice: dict[str, Any], rng, task: GuiTask) -> tuple[str, list]:
  """The goal and the step builders of `template`; each builder reads the phone as it is then."""
  app = choice["app"]
  open_step = lambda: Step(f"Open the {app} app", {"action_type": "open_app", "app_name": app}, f"Open the {app} app")
  click = lambda label, noun: (lambda: _click_step(phone, label, noun, task, rng))
  if template == "toggle":
    widget = _pick(rng, [w for w in phone.apps["Settings"].widgets if w.kind == "toggle"])
    state = "off" if widget.on else "on"
    return f"Turn {state} {widget.label} in Settings", [open_step, click(widget.label, "switch")]
  if template in ("page_toggle", "page_back"):
    page = _pick(rng, [w for w in phone.apps["Settings"].widgets if w.target.startswith("page:")])
    if template == "page_back":
      back = lambda: Step("Go back", {"action_type": "navigate_back"}, "Go back")
      return f"Look at {page.label} settings, then go back", [open_step, click(page.label, "item"), back]
    widget = _pick(rng, phone.pages[page.label].widgets)
    state = "off" if widget.on else "on"
    return (f"Turn {state} {widget.label} in {page.label} settings",
            [open_step, click(page.label, "item"), click(widget.label, "switch")])
  if template == "message":
    name, word = _pick(rng, CONTACTS), _pick(rng, WORDS)
    return f"Send {word} to {name} in Messages", [
        open_step, click("To", "field"), lambda: _type_step(name, "To", rng), click("Message", "field"),
        lambda: _type_step(word, "Message", rng), click("Send", "button")]
  if template == "search":
    word = _pick(rng, WORDS)
    return f"Search the Store for {word}", [open_step, click("Search", "field"),
                                            lambda: _type_step(word, "Search", rng), click("Go", "button")]
  if template == "contact":
    contacts = phone.apps["Contacts"].widgets
    name = _pick(rng, [w.label for w in contacts[VISIBLE_CONTACTS:]])
    scroll = lambda: Step("Scroll down the list", {"action_type": "scroll", "direction": "down"}, "Scroll down the list",
                          {"action_type": "scroll", "direction": "up"})
    return f"Call {name} from Contacts", [open_step, scroll, click(name, "contact")]
  alarm = _pick(rng, [w for w in phone.apps["Clock"].widgets if w.kind == "toggle"])
  state = "off" if alarm.on else "on"
  return f"Turn {state} the {alarm.label} alarm", [open_step, click(alarm.label, "alarm")]


def sample_episode(rng: np.random.Generator, task: GuiTask = GuiTask()) -> Episode:
  """One episode: a world, a goal, and the steps that reach it, with every screen rendered."""
  template = _pick(rng, TEMPLATES)
  phone, choice = _build_world(rng, template)
  goal, builders = _plan(phone, template, choice, rng, task)
  first = phone.apps[choice["app"]]
  key = (template, goal, tuple((w.label, w.slot, w.color) for w in first.widgets[:VISIBLE_CONTACTS]))
  steps, screens, trees, phones = [], [], [], []
  for build in builders:
    screens.append(render(phone, task))
    trees.append(elements(phone, task))
    phones.append(copy.deepcopy(phone))
    step = build()
    steps.append(step)
    phone.act(step.action, task)
  screens.append(render(phone, task))
  trees.append(elements(phone, task))
  return Episode(template, goal, steps, screens, trees, key, phones)


tool_call = infigui_r1.tool_call  # the target's tool call, as the reader writes it for real episodes


def response(subgoal: str, action: dict[str, Any]) -> str:
  """The reasoning-injection target: the sub-goal in <think><step>, then the tool call."""
  return infigui_r1.target(subgoal, action)


def teacher_responses(episode: Episode, rng: np.random.Generator, teacher_error: float) -> list[str]:
  """One target per step; a step with a distractor gets it with probability `teacher_error`."""
  out = []
  for step in episode.steps:
    wrong = step.distractor is not None and rng.random() < teacher_error
    out.append(response(step.subgoal, step.distractor if wrong else step.action))
  return out


def _rng(split: str, seed: int, index: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([_SPLIT_TAGS[split], seed, index, *extra])


def split_episodes(split: str, num_episodes: int, *, task: GuiTask = GuiTask(), seed: int = 0,
                   test_size: int = 100) -> list[Episode]:
  """Episodes 0 .. num_episodes - 1 of `split` (see the module docstring for how splits differ)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")
  if split == "test":
    return [sample_episode(_rng("test", _TEST_SEED, i), task) for i in range(num_episodes)]
  held_out = {episode.key for episode in split_episodes("test", test_size, task=task)}
  return items_apart_from(num_episodes, lambda index: _rng(split, seed, index), lambda rng: sample_episode(rng, task),
                          held_out, key=lambda episode: episode.key)


def episode_record(episode: Episode, names: list[str], task: GuiTask, *, episode_id: int,
                   responses: list[str] | None) -> dict[str, Any]:
  """The episode in AndroidControl's fields (screenshots as file names), plus the teacher's targets."""
  record = {"episode_id": episode_id, "goal": episode.goal, "screenshots": names,
            "screenshot_widths": [task.width] * len(names), "screenshot_heights": [task.height] * len(names),
            "actions": [json.dumps(step.action) for step in episode.steps],
            "step_instructions": [step.instruction for step in episode.steps],
            "accessibility_trees": [json.dumps(tree) for tree in episode.trees], "template": episode.template}
  if responses is not None:
    record["teacher_responses"] = responses
  return record


def write_split(path: str, split: str, num_episodes: int, *, task: GuiTask = GuiTask(), seed: int = 0,
                test_size: int = 100, teacher_error: float = 0.5, reuse: bool = True) -> dict[str, Any]:
  """Writes `num_episodes` episodes of `split` as `path/<split>.jsonl` and their screenshots as
  `path/screens/<split>_<episode>_<step>.png` (named relative to `path`). 'train' records carry
  the teacher's targets. `path/<split>.params.json` keeps the arguments: when they match and every
  file exists (`reuse`), nothing is rewritten.

  Returns:
    {'path': the JSONL, 'seconds': generation time (0.0 when reused), 'episodes': the Episodes}.
  """
  if not 0 <= teacher_error <= 1:
    raise ValueError(f"teacher_error={teacher_error} must be in [0, 1]")
  params = {"split": split, "num_episodes": num_episodes, "task": dataclasses.asdict(task),
            "seed": seed if split == "train" else _TEST_SEED, "test_size": test_size if split == "train" else None,
            "teacher_error": teacher_error if split == "train" else None, "version": 2}
  out = {"path": os.path.join(path, f"{split}.jsonl"), "seconds": 0.0}
  params_path = os.path.join(path, f"{split}.params.json")
  if reuse and written_with(params_path, params) and os.path.isfile(out["path"]):
    return out
  start = time.perf_counter()
  episodes = split_episodes(split, num_episodes, task=task, seed=seed, test_size=test_size)
  os.makedirs(os.path.join(path, "screens"), exist_ok=True)
  with open(out["path"], "w", encoding="utf-8") as f:
    for index, episode in enumerate(episodes):
      names = [os.path.join("screens", f"{split}_{index:05d}_{i}.png") for i in range(len(episode.screens))]
      for name, screen in zip(names, episode.screens):
        with open(os.path.join(path, name), "wb") as image_file:
          image_file.write(tvr.encode_png(screen))
      responses = None
      if split == "train":
        responses = teacher_responses(episode, _rng(split, params["seed"], index, _TEACHER_STREAM), teacher_error)
      f.write(json.dumps(episode_record(episode, names, task, episode_id=index, responses=responses)) + "\n")
  with open(params_path, "w", encoding="utf-8") as f:
    json.dump(params, f)
  out["seconds"] = time.perf_counter() - start
  out["episodes"] = episodes
  return out


def text_corpus(num_episodes: int = 300, seed: int = 0) -> list[str]:
  """Goals, step instructions and teacher targets of `num_episodes` episodes, for tokenizers."""
  rng = np.random.default_rng(seed)
  texts = [infigui_r1.SYSTEM_PROMPT, infigui_r1.SHORT_SYSTEM_PROMPT, tvr._CHAT_TEMPLATE_WORDS]  # pylint: disable=protected-access
  for _ in range(num_episodes):
    episode = sample_episode(rng)
    texts.append(episode.goal)
    for step in episode.steps:
      texts.append(infigui_r1.user_text(episode.goal, step.instruction, "short"))
      texts.append(response(step.subgoal, step.action))
      if step.distractor is not None:
        texts.append(response(step.subgoal, step.distractor))
  return texts
