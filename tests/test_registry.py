import pytest

from eebench.models import ModelConfigError, UnknownNameError, create_model
from eebench.registry import Registry


def test_unknown_model_suggests_nearest_name():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'cascade'\?"):
        create_model("cascde")


def test_unknown_config_key_names_field_and_nearest():
    with pytest.raises(ModelConfigError, match=r"'widht'.*did you mean 'width'"):
        create_model("cascade", widht=8)


def test_non_positive_width_names_field():
    with pytest.raises(ModelConfigError, match=r"'width': expected a positive integer, got 0"):
        create_model("cascade", width=0)


def test_registry_refuses_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    assert reg.names() == ["a"]
