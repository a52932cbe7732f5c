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


@pytest.mark.parametrize("text, message", [
    ("int4-weight-only:group_size=-3", r"group_size must be >= 1 \(or -1: one group per row\), got -3"),
    ("int8-weight-only:group_size=0", "group_size must be >= 1"),
    ("prune-unstructured:sparsity=-0.1", r"sparsity must be in \[0, 1\), got -0.1"),
    ("prune-structured:ratio=1.5", r"ratio must be in \[0, 1\)"),
    ("prune-structured:bn_samples=-1", "bn_samples must be >= 0"),
    ("gptq:bits=3", "bits must be 4, got 3"),
    ("gptq:damp=0", r"damp must be in \(0, 1\)"),
    ("awq:group_size=-128", "group_size must be >= 1"),
    ("cluster-kmeans:k=1", r"k must be in \[2, 65536\]"),
    ("distill:lr=-1e-4", "lr must be > 0"),
    ("distill:temperature=nan", "temperature must be a finite number"),
    ("distill:steps=0", "steps must be >= 1"),
    ("int8-static:calibration_samples=-4", "calibration_samples must be >= 1"),
    ("onnx-int8-static:opset=3", "opset must be >= 7"),
    ("openvino-int8:samples=0", "samples must be >= 1"),
])
def test_out_of_range_parameters_are_refused_in_one_line(text, message):
    name = text.split(":")[0]
    if name not in METHODS:
        pytest.skip(f"{name} not registered")
    with pytest.raises(SqueezebenchError, match=f"method {name}: {message}") as info:
        parse_chain("original+" + text)
    assert "\n" not in str(info.value)


def test_in_range_and_sentinel_values_are_accepted():
    assert parse_method("int4-weight-only:group_size=-1").group_size == -1
    assert parse_method("int4-weight-only:group_size=32").group_size == 32
    assert parse_method("prune-structured:ratio=0").ratio == 0.0
    assert parse_method("int8-static:calibration_samples=none").calibration_samples is None


def test_bounds_also_hold_for_configs_built_in_code():
    from squeezebench.methods.weight_only import Int4WeightOnlyConfig

    with pytest.raises(ValueError, match="group_size"):
        Int4WeightOnlyConfig(group_size=-3)


def test_range_describe_and_contains():
    from squeezebench.methods.base import Range

    r = Range(lo=0, hi=1, lo_open=True)
    assert r.describe() == "in (0, 1]" and r.contains(1) and not r.contains(0)
    assert Range(hi=5, hi_open=True).describe() == "< 5"
