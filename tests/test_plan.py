"""bmstudy.plan: profiles, overrides, round trips and the plan file."""
from __future__ import annotations

import json

import pytest

from bmstudy import plan as P


@pytest.mark.parametrize("profile", sorted(P.PROFILES))
def test_round_trip_and_hash(profile, tmp_path):
    plan = P.resolve_plan(profile)
    d = plan.to_dict()
    json.dumps(d)  # JSON-clean
    again = P.StudyPlan.from_dict(json.loads(json.dumps(d)))
    assert again == plan and again.hash() == plan.hash()
    path = P.write_plan(plan, tmp_path / "plan.json")
    assert P.load_plan(path) == plan


def test_profiles_carry_the_stage_settings():
    paper, cpu, tiny = (P.resolve_plan(n) for n in ("paper", "cpu", "tiny"))
    assert paper.preprocess.target_spacing == (0.833, 0.833, 0.833) and paper.gpu
    assert paper.train.patch_size == (128, 128, 128) and paper.train.batch_size == 4
    assert paper.train.learning_rate == 1e-4 and paper.train.decoder_dropout == 0.5
    assert paper.synth.name == "paper" and paper.synth.n_internal == 470 and paper.synth.n_external == 172
    assert cpu.preprocess.target_spacing == (1.0, 1.0, 1.0) and not cpu.gpu
    assert cpu.synth.name == "default" and cpu.train.patch_size == (64, 64, 64)
    assert tiny.synth.name == "tiny" and tiny.train.patch_size == (32, 32, 32)
    assert paper.inference.threshold == 0.5 and paper.inference.blend == "mean"


def test_overrides_dotted_and_nested():
    plan = P.resolve_plan("cpu", {"seed": 3, "train.epochs": 2, "preprocess": {"crop_to_brain": True},
                                  "evaluation.n_boot": 10, "synth.n_internal": 6})
    assert plan.seed == 3 and plan.train.seed == 3  # the study seed seeds training
    assert plan.train.epochs == 2 and plan.preprocess.crop_to_brain and plan.evaluation.n_boot == 10
    assert plan.synth.n_internal == 6 and plan.synth.n_external == P.SYNTH_PRESETS["default"].n_external
    assert P.resolve_plan("cpu", {"seed": 3, "train.seed": 9}).train.seed == 9
    assert P.resolve_plan("cpu").hash() != plan.hash()


@pytest.mark.parametrize("bad, match", [
    ({"nope": 1}, "unknown plan key 'nope'"),
    ({"train.nope": 1}, "nope"),
    ({"inference.blend": "max"}, "blend"),
    ({"evaluation": 3}, "needs a mapping"),
    ({"train.output_prior": 1.5}, "output_prior"),
])
def test_bad_overrides_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        P.resolve_plan("cpu", bad)


def test_unknown_profile_and_bad_plan_file(tmp_path):
    with pytest.raises(ValueError, match="unknown study profile 'huge'"):
        P.resolve_plan("huge")
    bad = tmp_path / "plan.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=str(bad)):
        P.load_plan(bad)
    bad.write_text(json.dumps({"profile": "cpu", "extra": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown plan keys"):
        P.load_plan(bad)


def test_parse_override():
    assert P.parse_override("train.epochs=3") == ("train.epochs", 3)
    assert P.parse_override('preprocess={"crop_to_brain": true}') == ("preprocess", {"crop_to_brain": True})
    assert P.parse_override("inference.blend=gaussian") == ("inference.blend", "gaussian")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        P.parse_override("epochs")


def test_section_slices():
    plan = P.resolve_plan("tiny")
    assert plan.section("train")["patch_size"] == [32, 32, 32]
    with pytest.raises(ValueError, match="unknown plan section"):
        plan.section("nope")
