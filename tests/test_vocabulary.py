import pytest

from lumbar_common import vocabulary as v


def test_25_findings_in_rsna_order():
    keys = [v.rsna_key(*k) for k in v.finding_keys()]
    assert len(keys) == 25 == len(set(keys))
    assert keys[0] == "spinal_canal_stenosis_l1_l2"
    assert keys[-1] == "right_subarticular_stenosis_l5_s1"
    assert "left_neural_foraminal_narrowing_l4_l5" in keys
    assert v.parse_rsna_key("left_neural_foraminal_narrowing_l4_l5") == (
        "neural_foraminal_narrowing", "left", "L4-L5")


def test_spider_labels_round_trip():
    assert v.spider_vertebra_label("L5") == 1
    assert v.spider_vertebra_label("L1") == 5
    assert v.spider_disc_label("L5-S1") == 201
    assert v.spider_disc_label("L1-L2") == 205
    for level in v.LEVELS:
        assert v.spider_label_name(v.spider_disc_label(level)) == level
    assert v.spider_label_name(50) == "S1"
    assert v.spider_label_name(100) == "spinal canal"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="L6-S1"):
        v.level_suffix("L6-S1")
    with pytest.raises(ValueError, match="side"):
        v.rsna_key("spinal_canal_stenosis", "left", "L4-L5")
    assert v.lss_to_rsna(0) == v.lss_to_rsna(1) == "Normal/Mild"
    assert v.lss_to_rsna(3) == "Severe"
