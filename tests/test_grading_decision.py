"""Who decides a grade: a learned model only where its card shows validation on real images."""

from __future__ import annotations

from models.grading.decision import (
    MEASUREMENT_KIND,
    Opinion,
    decide,
    disagreement_reason,
    learned_kind,
    may_decide,
)

CANAL = "spinal_canal_stenosis"
NORMAL, MODERATE, SEVERE = [0.9, 0.08, 0.02], [0.1, 0.8, 0.1], [0.02, 0.08, 0.9]


def _measured(p):
    return Opinion("measurement", p, "1.3", MEASUREMENT_KIND, "none")


def _learned(p, withdrawn=None):
    return Opinion("learned", p, "2.0", "learned: trained on synthetic studies only",
                   "synthetic", withdrawn)


SYNTHETIC_CARD = {"name": "grader", "version": "2.0", "training_data_kind": "synthetic",
                  "validated_on_real": []}
REAL_CARD = {**SYNTHETIC_CARD, "training_data_kind": "real", "validated_on_real": [CANAL]}


def test_synthetic_only_model_never_decides_and_disagreement_is_named():
    first, second, dis = decide(_measured(NORMAL), _learned(SEVERE), SYNTHETIC_CARD, CANAL)
    assert first is not None and first.grader == "measurement" and first.grade == "Normal/Mild"
    assert second is not None and second.grade == "Severe"
    assert dis == {"bands": 2, "grades": {"measurement": "Normal/Mild", "learned": "Severe"}}
    assert disagreement_reason(dis) == (
        "graders disagree by 2 bands (measurement Normal/Mild, learned Severe)")


def test_real_validated_model_decides_only_its_validated_condition():
    first, _, dis = decide(_measured(NORMAL), _learned(MODERATE), REAL_CARD, CANAL)
    assert first is not None and first.grader == "learned"
    assert dis is not None and dis["bands"] == 1
    assert may_decide(REAL_CARD, CANAL) and not may_decide(REAL_CARD, "subarticular_stenosis")
    assert not may_decide(None, CANAL) and not may_decide(SYNTHETIC_CARD, CANAL)


def test_withdrawn_learned_opinion_is_no_disagreement():
    withdrawn = _learned(None, "out of distribution: embedding distance 9.1 > 4.0")
    first, second, dis = decide(_measured(MODERATE), withdrawn, REAL_CARD, CANAL)
    assert first is not None and first.grader == "measurement" and first.grade == "Moderate"
    assert second is not None and second.withdrawn and second.grade is None
    assert dis is None


def test_agreeing_graders_raise_nothing():
    assert decide(_measured(SEVERE), _learned(SEVERE), SYNTHETIC_CARD, CANAL)[2] is None


def test_learned_alone_is_never_a_decision_for_an_unvalidated_model():
    first, second, dis = decide(_measured(None), _learned(SEVERE), SYNTHETIC_CARD, CANAL)
    assert first is None and second is not None and second.grade == "Severe" and dis is None


def test_learned_kind_names_the_training_data():
    kind, training = learned_kind(SYNTHETIC_CARD)
    assert kind == "learned: trained on synthetic studies only" and "synthetic" in training
    assert learned_kind(REAL_CARD)[0] == "learned: trained on real MRI"
