"""Ground-truth checks (r1jax.rewards.schema): every recipe names itself and the field it lacks."""
import numpy as np
import pytest

from r1jax.rewards import base, got_r1, sanity, schema

# The recipe name a reward's messages start with (aliases share their recipe's).
RECIPES = {name: "xiangqi" if name.startswith("xiangqi_r1") else name for name in base.names()}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_names_itself_for_an_empty_or_non_mapping_ground_truth(name):
  reward = base.get(name)
  with pytest.raises(KeyError) as missing:
    reward("<think>t</think><answer>A</answer>", {})
  assert missing.value.args[0].startswith(f"{RECIPES[name]}: ground_truth needs '")
  with pytest.raises(ValueError, match=f"^{RECIPES[name]}: ground_truth must be a mapping"):
    reward("<think>t</think><answer>A</answer>", "A")


def test_malformed_message_quotes_the_field_and_a_short_value():
  error = schema.malformed("star_r1", "answer", "a list of 'index.attribute.value' strings", 3)
  assert str(error) == "star_r1: ground_truth['answer'] must be a list of 'index.attribute.value' strings, got 3"
  long = str(schema.malformed("r", "f", "short", "x" * 500))
  assert long.endswith("...") and len(long) < 150


def test_field_reads_numpy_as_python():
  assert schema.field("r", {"answer": np.array(["a", "b"])}, "answer", "the answer") == ["a", "b"]


@pytest.mark.parametrize("value, expected", [("<answer> B </answer>", "B"), (" 12 ", "12"), (12, 12), (0.5, 0.5)])
def test_answer_value_strips_tags_and_keeps_numbers(value, expected):
  assert schema.answer_value("r", value) == expected


def test_image_size_prefers_the_ground_truth_and_names_a_broken_one():
  assert schema.image_size("r", {"width": 20, "height": 10}, {"width": 1, "height": 1}, required=True) == (10, 20)
  assert schema.image_size("r", {}, {"width": 20, "height": 10}, required=True) == (10, 20)
  assert schema.image_size("r", {}, {}, required=False) is None
  with pytest.raises(KeyError, match="r: ground_truth needs 'width' and 'height'"):
    schema.image_size("r", {}, {}, required=True)
  with pytest.raises(ValueError, match=r"r: ground_truth\['width/height'\]"):
    schema.image_size("r", {"width": 20}, {"width": 20, "height": 10}, required=False)


def test_target_letter_rate_needs_one_character():
  assert sanity.target_letter_rate("a a b", {"answer": "A"}).total == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match=r"target_letter_rate: ground_truth\['answer'\] must be one character"):
    sanity.target_letter_rate("a", {"answer": "ab"})


def test_got_r1_needs_a_layout_unless_both_judges_score_it():
  with pytest.raises(KeyError, match="got_r1: ground_truth needs 'layout'"):
    got_r1.got_r1("x", {"prompt": "a cat"}, semantic_judge=lambda *a: 1.0)
  result = got_r1.got_r1("x", {"prompt": "a cat"}, semantic_judge=lambda *a: 1.0, layout_judge=lambda *a: 0.5)
  assert result.total == pytest.approx(1.5)
