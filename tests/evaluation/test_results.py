"""Results of a round with planted effects, through the use case, the command, the page and exports.

Twenty valid ballots (and one invalid one) on the example round's twelve cadres, written directly
into the ballot tables. Every expected figure is worked out here from the planted grades, with
the rules of DESIGN.md, never read back from the code under test.
"""

import csv
import html
import datetime as dt
import io
import json
import math
import re
import secrets

import numpy as np
import pytest
from openpyxl import load_workbook

from evaluation.models import Ballot, Invitation, Rating
from evaluation.packed_scores import pack
from evaluation.results import ResultsNotReadyError, compute_results, icc_summary
from evaluation.results_export import neutralise
from evaluation.rounds import transition_round

SCORES = {"E": 100, "C": 80, "B": 60, "I": 40}
GRADE_KEYS = {"E": "excellent", "C": "competent", "B": "basic", "I": "incompetent"}
#: Item rating that goes with each grade before a ballot's shift and a little noise.
ITEM_BASE = {"E": 9, "C": 7, "B": 5, "I": 3}
WEIGHTS = {"superior": 0.30, "peer": 0.25, "subordinate": 0.25, "public": 0.20}
EVIL_NAME = '=HYPERLINK("http://evil.example/","click")'

# Grades for c01..c12 per ballot: E C B I, "?" = don't know. c01 and c02 always agree (a tie);
# c09 is dissatisfied on 15 of 20; c10 has exactly 5 of 15 valid (one third: not flagged under
# the strict rule); c11 6 of 15 (flagged); c12 5 of 14 valid with 6 "don't know" (flagged only
# if "don't know" leaves the denominator: 5/20 would not be).
BALLOTS = [
    # name, group, grades, item shift
    ("s1", "superior", "EECBBCEC" "BC??", 0),
    ("s2", "superior", "CCCCBCEB" "I?B?", 0),
    ("p1", "peer", "EECCBCCC" "BBC?", 0),
    ("p2", "peer", "EEBCCCEC" "IC?I", 0),
    ("p3", "peer", "CCCCBBEC" "IBB?", 0),
    ("p4", "peer", "EECBBCEB" "IC?B", 0),
    ("p5", "peer", "EECCCCCC" "I?CC", 0),
    ("straight", "peer", "CCCCCCCC" "CCCC", None),  # one grade and item 7 everywhere
    ("u1", "subordinate", "CCBBIBCB" "IIII", -2),  # the harsh group: a grade worse, items -2
    ("u2", "subordinate", "CCBCIBCB" "IIII", -2),
    ("u3", "subordinate", "EEBBBBCB" "IIII", -2),
    ("u4", "subordinate", "CCBBICCC" "IIII", -2),
    ("u5", "subordinate", "CCCBIBCB" "IIIB", -2),
    ("u6", "subordinate", "CCBBBBBB" "I?IB", -2),
    ("k1", "public", "EECCBCEC" "IBBC", 0),  # k1-k3: three identical ballots
    ("k2", "public", "EECCBCEC" "IBBC", 0),
    ("k3", "public", "EECCBCEC" "IBBC", 0),
    ("q4", "public", "EECCBCCC" "I???", 0),
    ("q5", "public", "EECBBCEC" "B???", 0),
    ("lenient", "public", "EEEECEEE" "CCCC", 3),  # a grade better than the rest, items +3
]
INVITED = {"superior": 3, "peer": 10, "subordinate": 8, "public": 6}


# --- expected values, by hand -------------------------------------------------------------

def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval at 95% (Wilson 1927; Newcombe 1998, method 3)."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def trimmed(values: list[float]) -> float:
    """Mean after dropping the single highest and lowest value from 6 values up."""
    values = sorted(values)
    if len(values) >= 6:
        values = values[1:-1]
    return sum(values) / len(values)


def column(cadre: int, groups=None) -> list[str]:
    """The valid grade letters cadre (0-based) got, from the given groups or all of them."""
    return [g[cadre] for _, group, g, _ in BALLOTS
            if g[cadre] != "?" and (groups is None or group in groups)]


def expected_score(cadre: int) -> float:
    """Group trimmed means, groups under 3 valid grades folded, weights renormalised."""
    shown = {}
    for group in WEIGHTS:
        grades = column(cadre, {group})
        if len(grades) >= 3:
            shown[group] = trimmed([SCORES[g] for g in grades])
    total = sum(WEIGHTS[g] for g in shown)
    return sum(WEIGHTS[g] * s for g, s in shown.items()) / total


def competition_ranks(scores: list[float]) -> list[int]:
    """1, 2, 2, 4 ranking, best first."""
    return [1 + sum(other > s + 1e-9 for other in scores) for s in scores]


# --- the planted round --------------------------------------------------------------------

def _insert_ballots(session, round_) -> dict[str, str]:
    """Write BALLOTS (plus one invalid ballot) into the round; return receipt by ballot name."""
    groups = {g.key: g for g in round_.groups}
    grades = {g.key: g for g in round_.grades}
    noise = np.random.default_rng(2026).integers(-1, 2, size=(len(BALLOTS), 12, 5))
    noise[15] = noise[16] = noise[14]  # the cluster is identical, items included
    receipts, rows = {}, []
    for b, (name, group, letters, shift) in enumerate(BALLOTS):
        ballot = _ballot(round_, groups[group])
        receipts[name] = ballot.receipt
        rows.append(ballot)
        for c, (letter, p) in enumerate(zip(letters, round_.participations)):
            grade = None if letter == "?" else grades[GRADE_KEYS[letter]].id
            values = [None if letter == "?" else min(10, max(1, (
                7 if shift is None else ITEM_BASE[letter] + shift + int(noise[b, c, i]))))
                for i in range(len(round_.items))]
            rows.append(Rating(ballot_id=ballot.id, participation_id=p.id, grade_id=grade,
                               scores=pack(values)))
    invalid = _ballot(round_, groups["peer"], is_valid=False)  # all Incompetent, never counted
    rows.append(invalid)
    rows += [_rating(round_, invalid, p, grades["incompetent"].id) for p in round_.participations]
    rows += [Invitation(round_id=round_.id, group_id=groups[key].id,
                        token_hash=secrets.token_hex(32), code_hash=secrets.token_hex(32),
                        issued_on=dt.date(2026, 1, 5))
             for key, n in INVITED.items() for _ in range(n)]
    session.add_all(rows)
    session.commit()
    return receipts


def _ballot(round_, group, is_valid=True) -> Ballot:
    return Ballot(id=secrets.token_hex(16), round_id=round_.id, group_id=group.id,
                  receipt=secrets.token_hex(5).upper(), cast_on=dt.date(2026, 1, 6),
                  is_valid=is_valid)


def _rating(round_, ballot, participation, grade_id, comment=None, item_value=None) -> Rating:
    """A rating with every item scored item_value (None: every item blank)."""
    return Rating(ballot_id=ballot.id, participation_id=participation.id, grade_id=grade_id,
                  comment=comment, scores=pack([item_value] * len(round_.items)))


@pytest.fixture
def planted(session, make_round, example_spec):
    """A closed round with the planted ballots; a cadre named like a spreadsheet formula."""
    cadres = [dict(c) for c in example_spec["cadres"]]
    cadres[2]["name"] = EVIL_NAME
    cadres[3]["post"] = "-1+1"
    round_ = make_round("open", cadres=cadres)
    receipts = _insert_ballots(session, round_)
    transition_round(session, round_, "close", "test")
    return round_.id, receipts


@pytest.fixture
def doc(session, planted):
    return compute_results(session, planted[0])


def cadre(doc, key):
    return next(c for c in doc["cadres"] if c["key"] == key)


# --- the one-third rule -------------------------------------------------------------------

@pytest.mark.parametrize("key, k, n, dont_know, flagged", [
    ("c09", 15, 20, 0, True),
    ("c10", 5, 15, 5, False),  # exactly one third: not "more than one third"
    ("c11", 6, 15, 5, True),
    ("c12", 5, 14, 6, True),   # 5/20 if "don't know" counted: would not be flagged
])
def test_dissatisfied_share_interval_and_flag(doc, key, k, n, dont_know, flagged):
    c = cadre(doc, key)
    assert (c["dissatisfied_k"], c["valid_n"], c["dont_know"], c["n_ballots"]) == (k, n, dont_know, 20)
    assert c["dissatisfied_share"] == pytest.approx(k / n)
    assert c["dissatisfied_ci"] == pytest.approx(list(wilson(k, n)))
    assert c["flagged"] is flagged
    low, high = wilson(k, n)
    assert c["flag_certain"] is (flagged and low > 1 / 3)
    expected = "certain" if flagged and low > 1 / 3 else "borderline" if flagged or high > 1 / 3 else "clear"
    assert c["flag_status"] == expected


def test_certain_and_borderline_flags(doc):
    assert wilson(15, 20)[0] > 1 / 3 and cadre(doc, "c09")["flag_certain"]
    assert wilson(6, 15)[0] < 1 / 3 and cadre(doc, "c11")["flag_status"] == "borderline"
    assert [c["key"] for c in doc["cadres"] if c["flagged"]] == ["c09", "c11", "c12"]


def test_public_alone(doc):
    # c09 from the public: k1-k3 and q4 Incompetent, q5 Basically competent, lenient Competent.
    public = cadre(doc, "c09")["public"]
    assert (public["dissatisfied_k"], public["valid_n"]) == (4, 6)
    assert public["dissatisfied_ci"] == pytest.approx(list(wilson(4, 6)))
    assert public["flagged"] and not public["flag_certain"]
    # c11 from the public: q4 and q5 "don't know"; four valid grades, none dissatisfied.
    assert cadre(doc, "c11")["public"]["valid_n"] == 4
    assert cadre(doc, "c11")["public"]["dissatisfied_share"] == 0


def test_approval_share_and_warning(doc):
    for key in ("c01", "c11"):
        grades = column(int(key[1:]) - 1)
        share = sum(g in "EC" for g in grades) / len(grades)
        assert cadre(doc, key)["approval_share"] == pytest.approx(share)
        assert cadre(doc, key)["approval_warning"] is (share < 2 / 3)
    assert cadre(doc, "c11")["approval_warning"]  # 4 of 15


# --- scores, folding, ranks, bands ----------------------------------------------------------

def test_scores_fold_the_two_ballot_group_and_renormalise(doc):
    for c in doc["cadres"]:
        position = int(c["key"][1:]) - 1
        assert c["score"] == pytest.approx(expected_score(position)), c["key"]
        assert c["folded"] == ["superior"]
        # beside totals that include the two superior ballots, the other groups' own figures
        # would give those two away by subtraction: they are withheld, and the notes say so
        assert c["groups"] == []
        codes = [n["code"] for n in c["notes"]]
        assert {"folded", "groups_withheld", "weights_renormalised"} <= set(codes)
    notes = {n["code"]: n for n in cadre(doc, "c01")["notes"]}
    assert notes["weights_renormalised"]["weights"] == pytest.approx(
        {"peer": 0.25 / 0.70, "subordinate": 0.25 / 0.70, "public": 0.20 / 0.70})
    assert notes["groups_withheld"]["groups"] == ["peer", "subordinate", "public"]


def test_kpi_composite(doc, example_spec):
    kpi = example_spec["cadres"][0]["kpi"]
    assert cadre(doc, "c01")["composite"] == pytest.approx(0.5 * expected_score(0) + 0.5 * kpi)


def test_ranks_with_ties_and_bands(doc):
    scores = [expected_score(c) for c in range(12)]
    ranks = competition_ranks(scores)
    assert ranks[0] == ranks[1] == 1  # c01 and c02 got the same grades everywhere
    # Bands 3:5:2 over 12 cadres end at positions round(3.6) = 4, round(9.6) = 10 and 12.
    bands = [1 if r <= 4 else 2 if r <= 10 else 3 for r in ranks]
    for c in doc["cadres"]:
        position = int(c["key"][1:]) - 1
        assert (c["rank"], c["band"]) == (ranks[position], bands[position]), c["key"]
    assert 2 not in [c["rank"] for c in doc["cadres"]]


# --- rater bias -----------------------------------------------------------------------------

def test_planted_rater_bias_comes_out(doc, planted):
    _, receipts = planted
    flagged = {b["receipt"]: b for b in doc["rater_bias"]["ballots"]}
    assert "lenient" in flagged[receipts["lenient"]]["reasons"]
    assert flagged[receipts["lenient"]]["mean_deviation"] > 0
    assert [r for r, b in flagged.items() if "lenient" in b["reasons"]] == [receipts["lenient"]]
    assert "straight_line" in flagged[receipts["straight"]]["reasons"]
    assert [r for r, b in flagged.items() if "straight_line" in b["reasons"]] == [receipts["straight"]]
    cluster = sorted(receipts[k] for k in ("k1", "k2", "k3"))
    assert [c["receipts"] for c in doc["rater_bias"]["clusters"]] == [cluster]
    assert all("cluster" in flagged[r]["reasons"] for r in cluster)
    groups = doc["rater_bias"]["groups"]
    assert [(g["group"], g["direction"]) for g in groups] == [("subordinate", "harsher")]
    assert groups[0]["effect_size"] < 0 and groups[0]["p"] < 0.05


def test_bias_report_names_ballots_by_receipt_only(doc, planted):
    _, receipts = planted
    for b in doc["rater_bias"]["ballots"]:
        assert b["receipt"] in receipts.values()
        assert not {"ballot", "id", "group", "cast_on"} & set(b)


# --- turnout and reliability ----------------------------------------------------------------

def test_turnout_folds_small_groups(doc):
    turnout = doc["turnout"]
    shown = {g["group"]: g for g in turnout["groups"]}
    assert set(shown) == {"peer", "subordinate", "public"}
    assert (shown["peer"]["invited"], shown["peer"]["cast"], shown["peer"]["valid"]) == (10, 7, 6)
    assert shown["public"]["rate"] == pytest.approx(6 / 6)
    assert turnout["folded"]["groups"] == ["superior"]
    # one folded group with 2 ballots: neither its count nor the total (which would give it
    # away by subtraction) is shown
    assert (turnout["folded"]["cast"], turnout["cast"], turnout["valid"]) == (None, None, None)
    assert turnout["invited"] == 27


def test_reliability_per_shown_group_and_overall(doc):
    rel = doc["reliability"]
    assert rel["overall"]["n_ballots"] == 20
    assert [g["group"] for g in rel["groups"]] == ["peer", "subordinate", "public"]
    assert rel["folded"] == ["superior"]
    for figures in [rel["overall"], *rel["groups"]]:
        assert -1 <= figures["alpha"] <= 1
    # "Don't know" leaves holes, so raters are not crossed with cadres: the one-way ICC.
    assert rel["overall"]["icc"]["design"] == "nested" and rel["overall"]["icc"]["form"] == "ICC1"
    assert rel["overall"]["icc"]["n_cadres"] == 12


#: Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                          [6, 2, 4, 7]], dtype=float)


def test_icc_is_two_way_when_crossed_and_one_way_with_holes():
    # Published: ICC(2,1) = .29, ICC(2,4) = .62 (Shrout & Fleiss 1979, Table 4).
    crossed = icc_summary(SHROUT_FLEISS.T)  # ballots x cadres
    assert (crossed["design"], crossed["form"]) == ("crossed", "ICC2")
    assert (round(crossed["single"], 2), round(crossed["average"], 2)) == (0.29, 0.62)
    holed = SHROUT_FLEISS.T.copy()
    holed[0, 0] = np.nan
    nested = icc_summary(holed)
    assert (nested["design"], nested["form"], nested["n_cadres"]) == ("nested", "ICC1", 6)
    # One-way ANOVA with unequal group sizes (target 1 has 3 ratings), by the textbook formulas.
    rows = [[v for v in row if not np.isnan(v)] for row in holed.T]
    values = [v for row in rows for v in row]
    grand, n_total, k = sum(values) / len(values), len(values), len(rows)
    msb = sum(len(r) * (sum(r) / len(r) - grand) ** 2 for r in rows) / (k - 1)
    msw = sum((v - sum(r) / len(r)) ** 2 for r in rows for v in r) / (n_total - k)
    n0 = (n_total - sum(len(r) ** 2 for r in rows) / n_total) / (k - 1)
    assert nested["single"] == pytest.approx((msb - msw) / (msb + (n0 - 1) * msw))
    assert nested["average"] == pytest.approx((msb - msw) / msb)


def test_invalid_ballot_is_not_counted(doc):
    assert doc["round"]["n_ballots"] == 20
    assert all(c["n_ballots"] == 20 for c in doc["cadres"])


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["draft", "open"])
def test_results_are_refused_before_closing(session, make_round, runner, client, sign_in, status):
    round_ = make_round(status)
    with pytest.raises(ResultsNotReadyError):
        compute_results(session, round_.id)
    result = runner.invoke(args=["results", str(round_.id)])
    assert result.exit_code != 0 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    sign_in("analyst")
    assert client.get(f"/staff/rounds/{round_.id}/results").status_code == 409
    assert client.get(f"/staff/rounds/{round_.id}/results.csv").status_code == 409


def test_unknown_round_is_refused(runner):
    result = runner.invoke(args=["results", "999", "--format", "csv"])
    assert result.exit_code == 1 and result.stderr.strip() == "error: no round with id 999"


# --- the command, the page and the exports agree --------------------------------------------

def pct(x) -> str:
    return f"{x * 100:.1f}%"


def test_json_command_matches_the_page(runner, client, sign_in, planted):
    round_id, _ = planted
    result = runner.invoke(args=["results", str(round_id), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"round", "cadres", "turnout", "reliability", "rater_bias"} <= set(doc)
    sign_in("analyst")
    page = client.get(f"/staff/rounds/{round_id}/results").get_data(as_text=True)
    for c in doc["cadres"]:
        block = re.search(rf'id="cadre-{re.escape(c["key"])}".*?</details>', page, re.S).group(0)
        low, high = c["dissatisfied_ci"]
        for shown in (f"#{c['rank']}", f"{c['score']:.2f}", f"{c['composite']:.2f}",
                      pct(c["dissatisfied_share"]), f"[{pct(low)}, {pct(high)}]",
                      f"{c['dissatisfied_k']} / {c['valid_n']}", f"Band {c['band']}"):
            assert shown in block, (c["key"], shown)
        status = {"certain": "Flagged, certain"}.get(c["flag_status"]) or (
            "Flagged, borderline" if c["flagged"] else
            "Not flagged, borderline" if c["flag_status"] == "borderline" else "Not flagged")
        assert status in block, c["key"]
        for g in c["groups"]:
            assert f"{g['score']:.2f}" in block
    assert 'class="group-superior"' not in page  # two ballots: folded, never a row of its own
    assert 'class="group-peer"' not in page  # withheld beside the totals (see the notes)
    assert "Per-group figures are withheld for this cadre" in page
    assert "&#34;http" in page or "&quot;http" in page  # the evil name is escaped, not markup
    rel = doc["reliability"]["overall"]
    assert f"{rel['alpha']:.3f}" in page and f"{rel['icc']['single']:.3f}" in page
    for receipt in doc["rater_bias"]["clusters"][0]["receipts"]:
        assert receipt in page


def test_csv_neutralises_formulas(runner, planted):
    result = runner.invoke(args=["results", str(planted[0]), "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 12
    by_key = {r["key"]: r for r in rows}
    assert by_key["c03"]["name"] == "'" + EVIL_NAME
    assert by_key["c04"]["post"] == "'-1+1"
    assert by_key["c10"]["flagged"] == "false" and by_key["c11"]["flagged"] == "true"
    assert float(by_key["c11"]["dissatisfied_share"]) == pytest.approx(6 / 15)
    assert by_key["c01"]["superior_score"] == ""  # folded: never shown alone
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())


@pytest.mark.parametrize("value, safe", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("王建国", "王建国"), (-1.5, -1.5), (None, None),
])
def test_neutralise(value, safe):
    assert neutralise(value) == safe


def test_downloads(client, sign_in, planted):
    sign_in("analyst")
    round_id = planted[0]
    response = client.get(f"/staff/rounds/{round_id}/results.xlsx")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    name = header.index("name")
    assert len(body) == 12 and "'" + EVIL_NAME in [r[name] for r in body]
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    response = client.get(f"/staff/rounds/{round_id}/results.csv")
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/csv; charset=utf-8"
    text = response.data.decode("utf-8-sig")
    assert "'" + EVIL_NAME.replace('"', '""') in text


def test_page_has_no_inline_script_or_style(client, sign_in, planted):
    sign_in("organiser")
    page = client.get(f"/staff/rounds/{planted[0]}/results").get_data(as_text=True)
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert 'id="rater-bias"' in page and 'id="turnout"' in page


@pytest.mark.parametrize("status", ["closed", "published", "archived"])
def test_round_without_ballots_has_empty_results(session, make_round, runner, client, sign_in,
                                                 status):
    round_ = make_round(status)
    doc = compute_results(session, round_.id)
    assert doc["round"]["n_ballots"] == 0 and len(doc["cadres"]) == 12
    c = doc["cadres"][0]
    assert (c["n_ballots"], c["score"], c["rank"], c["band"], c["flagged"]) == (0, None, None, None, False)
    assert c["dissatisfied_share"] is None and c["dissatisfied_ci"] is None
    assert doc["rater_bias"] == {"ballots": [], "clusters": [], "groups": []}
    result = runner.invoke(args=["results", str(round_.id), "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    sign_in("analyst")
    assert client.get(f"/staff/rounds/{round_.id}/results").status_code == 200


def test_groups_are_shown_when_none_is_folded(session, make_round, example_spec, client, sign_in):
    """With a minimum of 2, the two superior ballots form a group of their own: every group shows."""
    rules = dict(example_spec["rules"], min_group_size=2)
    round_ = make_round("open", rules=rules)
    _insert_ballots(session, round_)
    transition_round(session, round_, "close", "test")
    doc = compute_results(session, round_.id)
    c01 = cadre(doc, "c01")
    assert c01["folded"] == [] and "groups_withheld" not in [n["code"] for n in c01["notes"]]
    groups = {g["group"]: g for g in c01["groups"]}
    assert set(groups) == {"superior", "peer", "subordinate", "public"}
    assert groups["peer"]["weight_used"] == pytest.approx(0.25)
    assert groups["peer"]["score"] == pytest.approx(trimmed([100, 100, 80, 100, 100, 80]))
    assert groups["subordinate"]["grades"] == {"excellent": 1, "competent": 5, "basic": 0,
                                               "incompetent": 0}
    assert doc["turnout"]["cast"] == 21 and doc["turnout"]["folded"] is None
    sign_in("analyst")
    page = client.get(f"/staff/rounds/{round_.id}/results").get_data(as_text=True)
    assert 'class="group-peer"' in page and 'class="group-superior"' in page
    assert f"{groups['peer']['score']:.2f}" in page


def test_identical_ballots_give_results_without_reliability_figures(session, make_round, runner,
                                                                    client, sign_in):
    """Five ballots that give every cadre the same grade and every item 8: nothing varies, so
    the ICC is undefined. The page, both downloads and the command still answer."""
    round_ = make_round("open")
    groups = {g.key: g for g in round_.groups}
    competent = next(g for g in round_.grades if g.key == "competent")
    ballots = [_ballot(round_, groups["peer"]) for _ in range(5)]
    session.add_all(ballots)
    session.add_all([_rating(round_, b, p, competent.id, item_value=8)
                     for b in ballots for p in round_.participations])
    session.commit()
    transition_round(session, round_, "close", "test")
    doc = compute_results(session, round_.id)
    assert doc["round"]["n_ballots"] == 5
    assert doc["reliability"]["overall"]["icc"]["single"] is None
    assert all(c["items"] and c["n_ballots"] == 5 for c in doc["cadres"])
    result = runner.invoke(args=["results", str(round_.id), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reliability"]["overall"]["icc"]["average"] is None
    sign_in("analyst")
    for suffix in ("", ".csv", ".xlsx"):
        assert client.get(f"/staff/rounds/{round_.id}/results{suffix}").status_code == 200


def test_pages_name_groups_grades_and_rules_by_their_labels(client, sign_in, planted):
    """Folded groups on the results page, and the round page's trimming and dissatisfied
    grades, read in the page's language, not as spec keys."""
    sign_in("analyst")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    page = client.get(f"/staff/rounds/{planted[0]}/results").get_data(as_text=True)
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    folded = [line.strip() for line in text.splitlines() if "3" in line and "上级" in line]
    assert folded and not re.search(r"[：:]\s*superior", text)
    round_page = html.unescape(re.sub(r"<[^>]+>", "", client.get(f"/staff/rounds/{planted[0]}")
                                      .get_data(as_text=True)))
    assert "去掉 k 个最高分和 k 个最低分" in round_page and "drop_extremes" not in round_page
    assert "不称职: > " in round_page and "incompetent:" not in round_page


@pytest.fixture
def commented(session, make_round):
    """A closed round: c01 rated on four valid ballots with a comment each (one "don't know"),
    c02 on two, with comments; an invalid ballot's comment; no comment elsewhere."""
    round_ = make_round("open")
    peer = next(g for g in round_.groups if g.key == "peer")
    grades = {g.key: g.id for g in round_.grades}
    c01, c02 = round_.participations[:2]
    rows = []
    for k, (grade, text) in enumerate([("incompetent", "too slow"), ("competent", "=SUM(A1)"),
                                       (None, "new here"), ("excellent", "great <b>work</b>")]):
        ballot = _ballot(round_, peer)
        rows += [ballot, _rating(round_, ballot, c01, grades.get(grade), text)]
        if k < 2:
            rows.append(_rating(round_, ballot, c02, grades["basic"], f"small {k}"))
    invalid = _ballot(round_, peer, is_valid=False)
    rows += [invalid, _rating(round_, invalid, c01, grades["incompetent"], "not counted")]
    session.add_all(rows)
    session.commit()
    transition_round(session, round_, "close", "test")
    return round_.id


def test_comments_come_sorted_by_text_without_grades_and_only_above_the_minimum(
        session, client, sign_in, commented):
    doc = compute_results(session, commented)
    assert cadre(doc, "c01")["comments"] == ["=SUM(A1)", "great <b>work</b>", "new here",
                                             "too slow"]
    small = cadre(doc, "c02")
    assert small["n_ballots"] == 2 and small["comments"] == []
    assert {"code": "comments_withheld", "min_group_size": 3} in small["notes"]
    assert all(cadre(doc, f"c{k:02d}")["comments"] == [] for k in range(3, 13))
    sign_in("analyst")
    page = client.get(f"/staff/rounds/{commented}/results").get_data(as_text=True)
    assert "great &lt;b&gt;work&lt;/b&gt;" in page and "great <b>" not in page
    assert page.index("=SUM(A1)") < page.index("great &lt;b&gt;") < page.index("too slow")
    comments = page[page.index('<ul class="comments">'):]
    assert "Incompetent" not in comments[:comments.index("</ul>")]
    assert "not counted" not in page and "small 0" not in page
    assert page.count('class="note-comments_withheld"') == 1
    book = load_workbook(io.BytesIO(client.get(
        f"/staff/rounds/{commented}/results.xlsx").data))
    rows = list(book["comments"].iter_rows(values_only=True))
    assert rows[0] == ("key", "name", "comment") and len(rows) == 5
    assert ("c01", cadre(doc, "c01")["name"], "'=SUM(A1)") in rows
    assert all(cell.data_type != "f" for row in book["comments"].iter_rows() for cell in row)
