"""Tests for r1jax.rewards.parsing."""
import math
import subprocess
import sys

import numpy as np
import pytest

from r1jax.processing import smart_resize
from r1jax.rewards import parsing


@pytest.mark.parametrize("text, expected", [
    ("<think>a</think><answer>b</answer>", True),
    ("<think>\nmulti\nline\n</think>\n\n<answer>\nB\n</answer>", True),
    ("<think></think><answer></answer>", True),
    ("<think>a</think><answer>b</answer> trailing", False),
    ("<think>a</think><answer>b</answer>\n", False),
    ("lead <think>a</think><answer>b</answer>", False),
    ("<think>a</think>text<answer>b</answer>", False),
    ("<think>a</think><answer>b</answer><answer>c</answer>", False),
    ("<think>a<think>b</think><answer>c</answer>", False),
    ("<think>a</think><answer>b</answer></answer>", False),
    ("<answer>b</answer>", False),
    ("<think>a</think>", False),
])
def test_is_think_answer(text, expected):
  assert parsing.is_think_answer(text) is expected


def test_is_think_answer_rejects_non_strings():
  assert parsing.is_think_answer(None) is False


def test_extract_tag_takes_first_complete_block_unstripped():
  assert parsing.extract_tag("x<answer> A </answer><answer>B</answer>", "answer") == " A "
  assert parsing.extract_tag("<answer>open only", "answer") is None
  assert parsing.extract_tag("<point>[1]</point>", "answer") is None
  assert parsing.extract_tag("<a.b>x</a.b>", "a.b") == "x"  # the tag is escaped, not a regex


@pytest.mark.parametrize("text, expected", [
    ("[1, 2.5]", [1, 2.5]),
    ("(1, 2)", (1, 2)),
    ("{'a': [1, 2]}", {"a": [1, 2]}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ("  [3]  ", [3]),
])
def test_parse_literal_reads_json_and_python_literals(text, expected):
  assert parsing.parse_literal(text) == expected


@pytest.mark.parametrize("text", [
    "[1, NaN]", "[Infinity]", "[1e999]", "[-1e999, 0]", "[1+2j]", "__import__('os').getcwd()",
    "[1, 2", "", "   ", "[" * 5000 + "]" * 5000, "[" * 150 + "]" * 150, "x" * (parsing.MAX_LITERAL_CHARS + 1),
    "1" * 5000,
])
def test_parse_literal_refuses_unsafe_or_broken_input(text):
  assert parsing.parse_literal(text) is None


def test_parse_literal_never_evaluates_code(tmp_path):
  marker = tmp_path / "marker"
  assert parsing.parse_literal(f"open({str(marker)!r}, 'w')") is None
  assert not marker.exists()
  assert parsing.parse_literal(None) is None


def test_parse_boxes():
  assert parsing.parse_boxes("[1, 2, 3, 4]") == [[1.0, 2.0, 3.0, 4.0]]
  assert parsing.parse_boxes("[[1, 2, 3, 4], [5, 6, 7, 8.5]]") == [[1, 2, 3, 4], [5, 6, 7, 8.5]]
  assert parsing.parse_boxes('[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]') == [[1, 2, 3, 4]]
  assert parsing.parse_boxes([[1, 2, 3, 4]]) == [[1, 2, 3, 4]]  # already parsed ground truth
  assert parsing.parse_boxes("[]") == []
  for bad in ("[1, 2, 3]", "[[1, 2, 3, 4], [1, 2]]", "[true, 2, 3, 4]", '["1", 2, 3, 4]', "[1e999, 2, 3, 4]",
              "[" + "9" * 400 + ", 1, 2, 3]", "{}", "box", None, 5):
    assert parsing.parse_boxes(bad) is None, bad


def test_parse_points_and_polygons():
  assert parsing.parse_points("[[1, 2], [3, 4.5]]") == [(1.0, 2.0), (3.0, 4.5)]
  assert parsing.parse_points("[7, 8]") == [(7.0, 8.0)]
  assert parsing.parse_points('[{"point_2d": [1, 2]}]') == [(1.0, 2.0)]
  assert parsing.parse_points("[]") == []
  assert parsing.parse_points("[[1, 2, 3]]") is None
  assert parsing.parse_points("[[1, NaN]]") is None


def test_rescaling_non_square_image_by_hand():
  # 1080x1920 with max_pixels 1280*28*28: beta = sqrt(1080*1920 / 1003520) = 1.4375, so
  # height = floor(1080 / 1.4375 / 28) * 28 = 728 and width = floor(1920 / 1.4375 / 28) * 28 = 1316.
  min_pixels, max_pixels = 56 * 56, 1280 * 28 * 28
  assert smart_resize(1080, 1920, 28, min_pixels, max_pixels) == (728, 1316)
  resized_box = [658.0, 364.0, 1316.0, 728.0]  # centre to bottom-right corner in resized pixels
  original = parsing.to_original_pixels(resized_box, (1080, 1920), min_pixels, max_pixels)
  np.testing.assert_allclose(original, [960.0, 540.0, 1920.0, 1080.0])
  back = parsing.to_resized_pixels(original, (1080, 1920), min_pixels, max_pixels)
  np.testing.assert_allclose(back, resized_box)
  # Stacks of points keep their shape; x and y scale differently (1920/1316 vs 1080/728).
  points = parsing.to_original_pixels([[1316.0, 0.0], [0.0, 728.0]], (1080, 1920), min_pixels, max_pixels)
  np.testing.assert_allclose(points, [[1920.0, 0.0], [0.0, 1080.0]])


def test_rescaling_errors():
  with pytest.raises(ValueError, match="even axis"):
    parsing.to_original_pixels([1.0, 2.0, 3.0], (100, 100), 56 * 56, 1280 * 28 * 28)


def test_image_frame():
  # Ground truth size + context limits -> smart_resize (1080x1920 -> 728x1316, as above).
  frame = parsing.image_frame({"height": 1080, "width": 1920}, {"min_pixels": 56 * 56}, 0, 1280 * 28 * 28)
  assert frame == parsing.ImageFrame((1080, 1920), (728, 1316))
  np.testing.assert_allclose(frame.to_original([658.0, 364.0]), [960.0, 540.0])
  # A resized size passed by the processor wins over recomputing it.
  frame = parsing.image_frame({}, {"height": 100, "width": 200, "resized_height": 50, "resized_width": 50}, 0, 1)
  np.testing.assert_allclose(frame.to_original([10.0, 10.0]), [40.0, 20.0])
  assert parsing.image_frame({}, {}, 3136, 1003520) is None
  assert parsing.image_frame({"height": 0, "width": 10}, {}, 3136, 1003520) is None
  assert parsing.image_frame({"height": 10, "width": 10}, {"max_pixels": "many"}, 3136, 1003520) is None
  assert parsing.image_frame({"height": 10, "width": 3000}, {}, 3136, 1003520) is None  # aspect ratio > 200


def test_answer_or_text_and_find_image_hw():
  assert parsing.answer_or_text("<think>x</think><answer> B </answer>") == "B"
  assert parsing.answer_or_text("  plain 12 ") == "plain 12"
  assert parsing.find_image_hw({"width": 640}, {"width": 640.0, "height": 480}) == (480, 640)
  assert parsing.find_image_hw({"width": True, "height": 4}, {"width": math.nan, "height": 2}) is None


def test_odd_literals_in_model_output_print_no_syntax_warning():
  """Python warns while parsing "1if ..." ; a training run must not print that per completion."""
  text = "[1if 1 else 2]"
  run = lambda code: subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                                    check=True).stderr
  assert "SyntaxWarning" in run(f"import ast\ntry: ast.literal_eval({text!r})\nexcept ValueError: pass")
  assert run(f"from r1jax.rewards.parsing import parse_literal\nassert parse_literal({text!r}) is None") == ""
