import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.registry import Registry


def test_unknown_name_suggests_close_match():
    reg: Registry[int] = Registry("method")
    reg.register("int8-dynamic", 1)
    reg.register("fp16", 2)
    with pytest.raises(SqueezebenchError, match=r"did you mean 'int8-dynamic'"):
        reg.get("int8-dynamc")
    assert reg.get("fp16") == 2


def test_duplicate_registration_is_refused():
    reg: Registry[int] = Registry("task")
    reg.register("a", 1)
    with pytest.raises(ValueError):
        reg.register("a", 2)
