import json

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.models.checks import check_model_config
from squeezebench.models.sources import source_of


def _model(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_seq_len_beyond_the_models_positions(tmp_path):
    source = source_of(str(_model(tmp_path, model_type="bert", max_position_embeddings=512)))
    check_model_config(source, 512)
    with pytest.raises(SqueezebenchError, match=r"--seq-len 100000 exceeds the 512 positions .* "
                                                r"\(max_position_embeddings in config.json\); pass --seq-len 512"):
        check_model_config(source, 100000)


def test_gpt2_style_n_positions(tmp_path):
    source = source_of(str(_model(tmp_path, model_type="gpt2", n_positions=1024)))
    with pytest.raises(SqueezebenchError, match="1024 positions .*n_positions"):
        check_model_config(source, 2048)


def test_auto_map_needs_trust_remote_code(tmp_path):
    model = _model(tmp_path, model_type="custom", auto_map={"AutoModel": "modeling_x.XModel"})
    with pytest.raises(SqueezebenchError, match="ships its own code .*AutoModel.*pass --trust-remote-code"):
        check_model_config(source_of(str(model)), 16)
    check_model_config(source_of(str(model), trust_remote_code=True), 16)


def test_non_local_sources_are_not_read():
    check_model_config({"kind": "python", "target": "x:y", "name": "y"}, 10**6)
