"""The round-spec validator: every rule, one clear message per problem naming the field."""

import copy
import json

import pytest

from evaluation.specs import (
    SpecError, canonical_json, fingerprint, frozen_settings, load_spec, validate_spec,
)


def problems_of(document) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_spec(document)
    return info.value.problems


def minimal(**changes):
    return {"title": "Round", "period": "2026", **changes}


def test_minimal_spec_gets_the_documented_defaults():
    spec = validate_spec(minimal())
    assert [(g["key"], g["score"], g["dissatisfied"]) for g in spec["grades"]] == [
        ("excellent", 100, False), ("competent", 80, False), ("basic", 60, False),
        ("incompetent", 40, True)]
    assert [(g["key"], g["weight"]) for g in spec["groups"]] == [
        ("superior", 0.30), ("peer", 0.25), ("subordinate", 0.25), ("public", 0.20)]
    assert [d["key"] for d in spec["dimensions"]] == ["de", "neng", "qin", "ji", "lian"]
    rules = spec["rules"]
    assert rules["trim"] == {"method": "drop_extremes", "k": 1, "proportion": 0, "min_n": 6}
    assert rules["dissatisfaction"] == {"grades": ["incompetent"], "threshold": "1/3", "strict": True}
    assert rules["min_group_size"] == 3
    assert rules["kpi_weight"] == 0.5
    assert rules["excellent_quota"] is None and rules["bands"] is None
    assert rules["validity"] == "warn"
    assert spec["item_scale"] == {"min": 1, "max": 10}
    assert spec["dont_know"] is False


def test_example_round_is_valid_with_twelve_cadres_and_four_groups(example_spec):
    assert len(example_spec["cadres"]) == 12
    assert [g["key"] for g in example_spec["groups"]] == ["superior", "peer", "subordinate", "public"]


def test_plain_string_label_becomes_both_languages():
    spec = validate_spec(minimal(groups=[{"key": "all", "label": "Everyone", "weight": 1}]))
    assert spec["groups"][0]["label"] == {"zh": "Everyone", "en": "Everyone"}


def test_one_language_label_fills_the_other():
    spec = validate_spec(minimal(groups=[{"key": "all", "label": {"zh": "全体"}, "weight": 1}]))
    assert spec["groups"][0]["label"] == {"zh": "全体", "en": "全体"}


@pytest.mark.parametrize("document, expected", [
    ([], "(document): must be a JSON object"),
    (minimal(colour="red"), "colour: unknown field"),
    ({"period": "2026"}, "title: required, a non-empty string"),
    (minimal(title="   "), "title: must be a non-empty string"),
    (minimal(title="x" * 201), "title: at most 200 characters, got 201"),
    (minimal(period=2026), "period: must be a non-empty string"),
    (minimal(dont_know="yes"), "dont_know: must be true or false"),
    # grades
    (minimal(grades=[{"key": "a", "label": "A", "score": 1}]), "grades: needs at least 2 entries"),
    (minimal(grades="abc"), "grades: must be a list"),
    (minimal(grades=[{"key": "a", "label": "A", "score": 2}, {"key": "a", "label": "B", "score": 1}]),
     "grades[1].key: duplicate key 'a'"),
    (minimal(grades=[{"key": "a", "label": "A", "score": 1}, {"key": "b", "label": "B", "score": 2}]),
     "grades[1].score: grades go best first, so scores must decrease (2 is not below 1)"),
    (minimal(grades=[{"key": "a b", "label": "A", "score": 2}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].key: letters, digits and _ only"),
    (minimal(grades=[{"key": "dont_know", "label": "A", "score": 2}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].key: \"dont_know\" is reserved for the don't-know answer"),
    (minimal(grades=[{"key": "a", "label": "A", "score": "high"}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].score: must be a number"),
    (minimal(grades=[{"key": "a", "label": "A", "score": True}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].score: must be a number"),
    (minimal(grades=[{"key": "a", "score": 2}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].label: required, a non-empty string"),
    (minimal(grades=[{"key": "a", "label": {"fr": "A"}, "score": 2}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].label.fr: unknown field"),
    (minimal(grades=[{"key": "a", "label": {}, "score": 2}, {"key": "b", "label": "B", "score": 1}]),
     "grades[0].label: needs a \"zh\" or an \"en\" label"),
    (minimal(grades=[{"key": "a", "label": "A", "score": 2, "dissatisfied": 1},
                     {"key": "b", "label": "B", "score": 1}]),
     "grades[0].dissatisfied: must be true or false"),
    # dimensions and items
    (minimal(dimensions=[{"key": "d", "label": "D", "items": []}]), "dimensions[0].items: needs at least 1 entry"),
    (minimal(dimensions=[{"key": "d", "label": "D", "items": [{"key": "i", "label": "I"}]},
                         {"key": "d", "label": "E", "items": [{"key": "j", "label": "J"}]}]),
     "dimensions[1].key: duplicate key 'd'"),
    (minimal(dimensions=[{"key": "d", "label": "D", "items": [{"key": "i", "label": "I"}]},
                         {"key": "e", "label": "E", "items": [{"key": "i", "label": "J"}]}]),
     "dimensions[1].items[0].key: duplicate item key 'i' (item keys are unique across the questionnaire)"),
    (minimal(dimensions=[{"key": "d", "label": "D", "weight": 0.5, "items": [{"key": "i", "label": "I"}]},
                         {"key": "e", "label": "E", "items": [{"key": "j", "label": "J"}]}]),
     "dimensions[1].weight: give a weight for every dimension or none"),
    (minimal(dimensions=[{"key": "d", "label": "D", "weight": 0.5, "items": [{"key": "i", "label": "I"}]},
                         {"key": "e", "label": "E", "weight": 0.4, "items": [{"key": "j", "label": "J"}]}]),
     "dimensions[1].weight: weights must add up to 1, they add up to 0.9"),
    (minimal(dimensions=[{"key": "d", "label": "D", "weight": 1.5, "items": [{"key": "i", "label": "I"}]}]),
     "dimensions[0].weight: must be at most 1, got 1.5"),
    # item scale
    (minimal(item_scale={"min": 5, "max": 5}), "item_scale.max: must be more than item_scale.min (5), got 5"),
    (minimal(item_scale={"min": 1.5, "max": 5}), "item_scale.min: must be a whole number"),
    (minimal(item_scale={"min": -1, "max": 5}), "item_scale.min: must be at least 0, got -1"),
    # groups
    (minimal(groups=[]), "groups: needs at least 1 entry"),
    (minimal(groups=[{"key": "a", "label": "A", "weight": 0.5}, {"key": "b", "label": "B", "weight": 0.2},
                     {"key": "c", "label": "C", "weight": 0.2}]),
     "groups[2].weight: weights must add up to 1, they add up to 0.9"),
    (minimal(groups=[{"key": "a", "label": "A", "weight": 1.2}]), "groups[0].weight: must be at most 1, got 1.2"),
    (minimal(groups=[{"key": "a", "label": "A"}]), "groups[0].weight: required"),
    (minimal(groups=[{"key": "a", "label": "A", "weight": 0.5}, {"key": "a", "label": "B", "weight": 0.5}]),
     "groups[1].key: duplicate key 'a'"),
    (minimal(groups=[{"key": "a", "label": "A", "weight": 1, "cadres": ["nobody"]}]),
     "groups[0].cadres[0]: no cadre with key 'nobody'"),
    (minimal(cadres=[{"key": "c1", "name": "N"}],
             groups=[{"key": "a", "label": "A", "weight": 1, "cadres": ["c1", "c1"]}]),
     "groups[0].cadres[1]: cadre 'c1' listed twice"),
    (minimal(groups=[{"key": "a", "label": "A", "weight": 1, "cadres": []}]),
     "groups[0].cadres: needs at least 1 entry"),
    # cadres
    (minimal(cadres=[{"key": "c1"}]), "cadres[0].name: required, a non-empty string"),
    (minimal(cadres=[{"key": "c1", "name": "A"}, {"key": "c1", "name": "B"}]), "cadres[1].key: duplicate key 'c1'"),
    (minimal(cadres=[{"key": "c 1", "name": "A"}]), "cadres[0].key: letters, digits and _ . - only"),
    (minimal(cadres=[{"key": "c1", "name": "A", "kpi": 120}]), "cadres[0].kpi: must be at most 100, got 120"),
    (minimal(cadres=[{"key": "c1", "name": "A", "age": 50}]), "cadres[0].age: unknown field"),
    # rules
    (minimal(rules=[]), "rules: must be an object"),
    (minimal(rules={"speed": 1}), "rules.speed: unknown field"),
    (minimal(rules={"trim": {"method": "median"}}),
     "rules.trim.method: must be one of none, drop_extremes, proportion; got 'median'"),
    (minimal(rules={"trim": {"method": "drop_extremes", "k": 3, "min_n": 6}}),
     "rules.trim.min_n: must be more than 2 × k = 6, or nothing would be left"),
    (minimal(rules={"trim": {"method": "drop_extremes", "k": -1}}), "rules.trim.k: must be at least 0, got -1"),
    (minimal(rules={"trim": {"method": "proportion", "proportion": 0.5}}),
     "rules.trim.proportion: must be less than 0.5, got 0.5"),
    (minimal(rules={"trim": {"min_n": 0}}), "rules.trim.min_n: must be at least 1, got 0"),
    (minimal(rules={"dissatisfaction": {"grades": ["awful"]}}), "rules.dissatisfaction.grades[0]: no grade with key 'awful'"),
    (minimal(rules={"dissatisfaction": {"grades": ["basic"]}}),
     "rules.dissatisfaction.grades: disagrees with the grades marked \"dissatisfied\" (incompetent); say it in one place"),
    (minimal(grades=[{"key": "a", "label": "A", "score": 2}, {"key": "b", "label": "B", "score": 1}],
             rules={"dissatisfaction": {"grades": ["a"]}}),
     "rules.dissatisfaction.grades: the best grade cannot count as dissatisfied"),
    (minimal(rules={"dissatisfaction": {"threshold": "one third"}}),
     "rules.dissatisfaction.threshold: must be a number or a fraction like \"1/3\", got 'one third'"),
    (minimal(rules={"dissatisfaction": {"threshold": 1.5}}),
     "rules.dissatisfaction.threshold: must be between 0 and 1, got 1.5"),
    (minimal(rules={"dissatisfaction": {"threshold": "1/0"}}),
     "rules.dissatisfaction.threshold: must be a number or a fraction like \"1/3\", got '1/0'"),
    (minimal(rules={"dissatisfaction": {"strict": "yes"}}), "rules.dissatisfaction.strict: must be true or false"),
    (minimal(rules={"min_group_size": 0}), "rules.min_group_size: must be at least 1, got 0"),
    (minimal(rules={"min_group_size": 2.5}), "rules.min_group_size: must be a whole number"),
    (minimal(rules={"excellent_quota": 0}), "rules.excellent_quota: must be more than 0, got 0"),
    (minimal(rules={"excellent_quota": 1.2}), "rules.excellent_quota: must be at most 1, got 1.2"),
    (minimal(rules={"kpi_weight": -0.1}), "rules.kpi_weight: must be at least 0, got -0.1"),
    (minimal(rules={"bands": [3]}), "rules.bands: needs at least 2 entries"),
    (minimal(rules={"bands": [3, 0, 2]}), "rules.bands[1]: must be more than 0, got 0"),
    (minimal(rules={"reason_required_for_dissatisfied": "no"}),
     "rules.reason_required_for_dissatisfied: must be true or false"),
    (minimal(rules={"validity": "reject"}), "rules.validity: must be \"warn\" or \"invalidate\", got 'reject'"),
])
def test_bad_document_names_the_field_and_the_problem(document, expected):
    assert expected in problems_of(document)


def test_every_problem_is_reported_not_just_the_first():
    problems = problems_of({"period": 7, "groups": [{"key": "a", "label": "A", "weight": 0.2}],
                            "rules": {"validity": "x"}})
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {"title", "period", "groups[0].weight", "rules.validity"}


def test_threshold_number_becomes_an_exact_fraction():
    spec = validate_spec(minimal(rules={"dissatisfaction": {"threshold": 0.3}}))
    assert spec["rules"]["dissatisfaction"]["threshold"] == "3/10"


def test_dissatisfaction_grades_alone_mark_the_grades():
    spec = validate_spec(minimal(
        grades=[{"key": "a", "label": "A", "score": 3}, {"key": "b", "label": "B", "score": 2},
                {"key": "c", "label": "C", "score": 1}],
        rules={"dissatisfaction": {"grades": ["b", "c"]}}))
    assert [g["dissatisfied"] for g in spec["grades"]] == [False, True, True]


@pytest.mark.parametrize("text, expected", [
    (b"{not json", "(document): not valid JSON"),
    (b'{"title": "x", "period": "y", "rules": {"kpi_weight": NaN}}', "(document): not valid JSON"),
    (b"\xff\xfe", "(document): not valid JSON"),
])
def test_unparseable_text_is_refused(text, expected):
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert info.value.problems[0].startswith(expected)


def test_normalised_spec_validates_to_itself(example_spec):
    assert validate_spec(copy.deepcopy(example_spec)) == example_spec


def test_fingerprint_is_sha256_of_canonical_utf8(example_spec):
    import hashlib
    text = canonical_json(frozen_settings(example_spec))
    assert fingerprint(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert "kpi" not in json.loads(text)["cadres"][0]
    assert "王建国" in text  # kept as characters, not \\u escapes
