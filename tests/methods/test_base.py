import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.methods import METHODS, chain_spec, parse_chain, parse_method


def test_core_methods_registered():
    for name in ("original", "fp16", "bf16"):
        assert name in METHODS


def test_parse_chain_drops_original_and_keeps_order():
    chain = parse_chain("original+fp16")
    assert [c.name for c in chain] == ["fp16"]
    assert chain_spec(parse_chain("original")) == "original"


def test_unknown_method_did_you_mean():
    with pytest.raises(SqueezebenchError, match="did you mean 'fp16'"):
        parse_method("fp61")


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(SqueezebenchError, match="unknown parameter 'bits'"):
        parse_method("fp16:bits=8")


def test_malformed_parameter():
    with pytest.raises(SqueezebenchError, match="key=value"):
        parse_method("fp16:oops")


def test_alias_with_colon_in_its_name():
    import squeezebench.methods as m

    if "prune-2of4" not in m.METHODS:
        pytest.skip("prune-2of4 not registered")
    assert parse_method("prune-2:4").name == "prune-2of4"
