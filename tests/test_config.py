import math
import tomllib

import pytest

from register.config import from_dict, load_config, preset_names, to_toml, with_overrides
from register.errors import ConfigError


def test_every_preset_loads_and_round_trips():
    assert {"default", "lung", "sceneflow", "shapes"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert from_dict(tomllib.loads(to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"affine": {"blurz": [1.0]}}, "unknown key 'affine.blurz'"),
        ({"afine": {}}, r"unknown table \[afine\]"),
        ({"affine": {"mode": "warp"}}, "affine.mode"),
        ({"affine": {"blurs": []}}, "non-empty list"),
        ({"affine": {"blurs": [1.0, -1.0]}}, "must be > 0"),
        ({"affine": {"iterations": 1.5}}, "integer"),
        ({"spline": {"blurs": [1.0, 0.5], "sigmas": [1.0, 2.0, 3.0]}}, "spline.sigmas has 3 values"),
        ({"pipeline": {"stages": ["spline", "affine"]}}, "in the order"),
        ({"pipeline": {"stages": ["warp"]}}, "unknown stage"),
        ({"pipeline": {"scaling": 1.5}}, "scaling"),
        ({"pipeline": {"multistart": True}}, "unknown key 'pipeline.multistart'"),
        ({"flow": {"sigma": 0.0}}, "flow.sigma must be > 0"),
        ({"flow": {"points": -1}}, "flow.points must be >= 0"),
        ({"flow": {"axes": "x,x,z"}}, "flow.axes = 'x,x,z': give the data axis of each model axis"),
        ({"flow": {"axes": "z,--x,y"}}, "flow.axes"),
        ({"flow": {"axes": "x,y"}}, "flow.axes"),
        ({"affine": {"max_iter": -1}}, "affine.max_iter must be >= 0"),
        ({"spline": {"max_iter": -2}}, "spline.max_iter must be >= 0"),
        ({"spline": {"max_iter": [4, -1, 4]}}, "spline.max_iter must be >= 0"),
        (
            {"spline": {"blurs": [1.0, 0.5], "sigmas": [2.0], "max_iter": [3, 3, 3]}},
            "spline.max_iter has 3 values",
        ),
        ({"spline": {"max_iter": [3.5]}}, "integer"),
        ({"affine": {"move_tol": 0}}, "affine.move_tol = 0.0: must be > 0"),
        ({"spline": {"cluster": -0.5}}, "spline.cluster = -0.5: must be >= 0"),
        ({"affine": {"cluster": -1}}, "affine.cluster = -1.0: must be >= 0"),
        ({"flow": {"max_controls": 0}}, "flow.max_controls must be >= 1"),
        ({"flow": {"modle": "lung"}}, "unknown key 'flow.modle'"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data, origin="test.toml")


def test_relative_lengths_resolve_to_data_units():
    cfg = from_dict(
        {"pipeline": {"length_unit": "relative"}, "affine": {"blurs": [0.1], "reach": [inf := math.inf]}}
    )
    resolved = cfg.in_data_units(200.0)
    assert resolved.affine.blurs == [20.0] and resolved.affine.reach == [inf]
    assert resolved.flow.sigma == pytest.approx(200.0 * cfg.flow.sigma)
    assert resolved.pipeline.length_unit == "data"
    assert load_config("lung").in_data_units(200.0) == load_config("lung")  # already in mm


def test_overrides_parse_toml_values_and_bare_words():
    cfg = with_overrides(
        load_config(), ["affine.mode=rigid", "spline.sigmas=[3, 2]", "spline.blurs=[1.0, 0.5]"]
    )
    assert cfg.affine.mode == "rigid" and cfg.spline.sigmas == [3.0, 2.0]
    with pytest.raises(ConfigError, match="TABLE.KEY=VALUE"):
        with_overrides(cfg, ["rigid"])


def test_a_bare_value_of_a_per_level_list_is_one_value_for_every_level():
    assert with_overrides(load_config(), ["spline.max_iter=4", "spline.reach=2.5"]).spline.max_iter == [4]
    assert from_dict({"spline": {"reach": 2.5}}).spline.reach == [2.5]
    assert load_config("lung").spline.max_iter == [0]  # the preset writes `max_iter = 0`


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="lung"):
        load_config("lungs")
