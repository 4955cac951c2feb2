"""Reading LLM answers: prose, fences, trailing commas, truncation, validation failures."""

import json

import pytest

from pipelines.parsing import ParsedAnswer, ParseFailure, parse_answer


def ok(text, **kw) -> ParsedAnswer:
  out = parse_answer(text, **kw)
  assert isinstance(out, ParsedAnswer), out
  return out


def fail(text, **kw) -> ParseFailure:
  out = parse_answer(text, **kw)
  assert isinstance(out, ParseFailure), out
  return out


def test_plain_json():
  p = ok('{"summary": "Bakes a lot.", "items": ["Stand mixer", "Cooling rack"]}')
  assert p.summary == "Bakes a lot." and p.items == ("Stand mixer", "Cooling rack")
  assert not p.truncated and p.notes == ()


def test_prose_and_fences_around_the_object():
  text = ('Sure! Based on the {history} here is my answer:\n```json\n'
          '{"summary": "Tea person", "items": ["Tea kettle", "Infuser"]}\n```\nHope this helps {ok}.')
  p = ok(text)
  assert p.items == ("Tea kettle", "Infuser") and p.summary == "Tea person"
  # Prose with a brace-y aside before the object, no fence.
  p = ok('Thinking {of a few}... {"summary": "s", "items": ["a"]} done')
  assert p.items == ("a",)


def test_trailing_commas_are_tolerated_outside_strings():
  p = ok('{"summary": "s, ]", "items": ["a, }", "b",],}')
  assert p.summary == "s, ]" and p.items == ("a, }", "b")
  assert "trailing_commas" in p.notes


def test_truncated_output_keeps_complete_items():
  full = json.dumps({"summary": "Grills outdoors.", "items": ["Grill brush", "Meat thermometer",
                                                              "Cast iron skillet"]})
  cut = full[:full.index("Cast iron") + 4]  # cut inside the third item
  p = ok(cut)
  assert p.truncated and p.items == ("Grill brush", "Meat thermometer")
  assert p.summary == "Grills outdoors."
  # Cut right after a comma between items, and with a fence that never closes.
  p = ok('```json\n{"summary": "x", "items": ["a", "b", ')
  assert p.truncated and p.items == ("a", "b")


def test_truncated_before_any_item_is_a_failure():
  assert fail('{"summary": "x", "items": [').reason == "bad_items"
  assert fail('{"summary": "The user li').reason == "invalid_json"


def test_validation():
  assert fail("").reason == "empty_response"
  assert fail("   \n").reason == "empty_response"
  assert fail("I cannot help with that.").reason == "no_json_object"
  assert fail('{"summary": "x", "items": ["a" "b"]}').reason == "invalid_json"
  assert fail('{"summary": 3, "items": ["a"]}').reason == "bad_summary"
  assert fail('{"items": ["a"]}').reason == "bad_summary"
  assert fail('{"summary": "x", "items": "a, b"}').reason == "bad_items"
  assert fail('{"summary": "x", "items": []}').reason == "empty_items"
  assert fail('{"summary": "x", "items": ["  ", 3, null]}').reason == "empty_items"
  assert fail('["a", "b"]').reason == "no_json_object"


def test_items_are_cleaned_deduplicated_and_capped():
  p = ok('{"summary": " a  b ", "items": ["Pan", 7, "pan", "  Pot\\n lid ", "Wok", "Rack"]}',
         max_items=3)
  assert p.summary == "a b"
  assert p.items == ("Pan", "Pot lid", "Wok")
  assert any(n.startswith("dropped_1_non_string") for n in p.notes) and "items_capped" in p.notes


@pytest.mark.parametrize("text", ["{", "{{{{", '{"a": "\\', "}{", "```json\n```"])
def test_garbage_never_raises(text):
  assert isinstance(parse_answer(text), ParseFailure)
