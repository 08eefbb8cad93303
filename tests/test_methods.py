"""The reconstruction-method registry: built-ins from entry points in a fixed order, plug-ins in code."""

import dataclasses
from importlib.metadata import entry_points

import pytest
from method_plugins import HalfStrength, methods_registered

from brain2image.config import ReconstructionConfig, RunConfig, config_from_dict
from brain2image.errors import InvalidArgumentError
from brain2image.ldm.methods import ZOnly
from brain2image.methods import (
    BUILTIN_METHODS,
    ENTRY_POINT_GROUP,
    METHOD_CHOICES,
    ReconstructionMethod,
    builtin_methods,
    get_method,
    method_label,
    method_names,
    needed_inputs,
    parse_methods,
    register_method,
)


class _Blur(ZOnly):
    name = "blurred_z"


def test_entry_points_list_the_four_builtins():
    found = {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(BUILTIN_METHODS) <= set(found)
    for name in BUILTIN_METHODS:
        assert issubclass(found[name], ReconstructionMethod) and found[name].name == name


def test_builtin_order_is_fixed_and_plug_ins_follow_in_registration_order():
    assert BUILTIN_METHODS == ("z_only", "c_only", "z_plus_c", "oracle")
    assert method_names() == BUILTIN_METHODS
    with methods_registered(HalfStrength, _Blur):
        assert method_names() == (*BUILTIN_METHODS, "z_plus_c_half", "blurred_z")
        assert builtin_methods() == BUILTIN_METHODS and builtin_methods(decoded_only=True) == BUILTIN_METHODS[:3]
        run_default = next(f for f in dataclasses.fields(RunConfig) if f.name == "reconstruction").default_factory
        assert run_default().methods == BUILTIN_METHODS
        assert ReconstructionConfig().methods == ("z_only", "c_only", "z_plus_c")
    assert method_names() == BUILTIN_METHODS


def test_what_each_builtin_needs():
    assert [(m.needs, m.true_features, m.uses_diffusion) for m in parse_methods(BUILTIN_METHODS)] == [
        (("z",), False, False), (("c",), False, True), (("z", "c"), False, True), (("z", "c"), True, True)]
    assert needed_inputs(["oracle", "c_only"]) == ("c", "z_true", "c_true")
    assert needed_inputs(["c_only", "z_only"]) == ("z", "c")
    assert [method_label(m) for m in BUILTIN_METHODS] == ["z only", "c only", "z + c", "oracle (true z + c)"]
    assert method_label("not_a_method") == "not_a_method"


def test_unknown_method_is_a_one_line_error_listing_the_registered_ones():
    with methods_registered(HalfStrength):
        with pytest.raises(InvalidArgumentError) as error:
            parse_methods(["z_only", "zc"])
        message = str(error.value)
        assert "\n" not in message and "'zc'" in message and "'z_plus_c_half'" in message
        assert "'oracle'" in message and get_method("z_plus_c_half").label == "z + c (strength 0.5)"


def test_config_accepts_a_registered_plug_in_and_lists_it_when_rejecting():
    with pytest.raises(InvalidArgumentError, match="z_plus_c_half"):
        config_from_dict(ReconstructionConfig, {"methods": ["z_plus_c_half"]})
    with methods_registered(HalfStrength):
        assert "z_plus_c_half" in METHOD_CHOICES
        config = config_from_dict(ReconstructionConfig, {"methods": ["z_plus_c", "z_plus_c_half"]})
        assert config.methods == ("z_plus_c", "z_plus_c_half")
        with pytest.raises(InvalidArgumentError) as error:
            config_from_dict(ReconstructionConfig, {"methods": ["zc"]}, where="run.toml")
        assert str(error.value) == ('run.toml: [reconstruction] methods = ["zc"]: expected a non-empty list of '
                                    'items from "z_only", "c_only", "z_plus_c", "oracle", "z_plus_c_half"')


def test_registering_checks_the_method():
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_method(ZOnly)
    with pytest.raises(InvalidArgumentError, match="not a ReconstructionMethod"):
        register_method(object())  # type: ignore[arg-type]

    class _Nameless(ZOnly):
        name = ""

    with pytest.raises(InvalidArgumentError, match="no name"):
        register_method(_Nameless)
