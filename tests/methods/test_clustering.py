"""cluster-kmeans on tiny config-built models."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods.clustering import kmeans_1d
from squeezebench.runtimes.pytorch import load_state, save_state

TEXT = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)),
        "attention_mask": torch.ones(2, 12, dtype=torch.long)}


def _bert(path):
    from transformers import BertModel

    return BertModel.from_pretrained(path).eval()


def _cluster(spec, path, tmp_path, round_trip=True):
    config = parse_method(spec)
    method = METHODS.get(config.name)
    model = _bert(path)
    with torch.no_grad():
        ref = model(**TEXT)[0]
        ctx = MethodContext(task=None, bundle=None)
        model = method.transform(model, config, ctx) or model
        out = model(**TEXT)[0]
    if not round_trip:
        return {"ref": ref, "out": out}
    directory = tmp_path / spec.replace(":", "_").replace(",", "_")
    directory.mkdir()
    files, fmt = save_state(model, directory)
    skeleton = method.restore(_bert(path), config, ctx.facts)
    load_state(skeleton, directory, fmt)
    with torch.no_grad():
        reloaded = skeleton(**TEXT)[0]
    return {"ref": ref, "out": out, "reloaded": reloaded, "size": files[0].stat().st_size, "model": model,
            "skeleton": skeleton, "facts": ctx.facts}


def _original_size(path, tmp_path):
    (tmp_path / "orig").mkdir(exist_ok=True)
    files, _ = save_state(_bert(path), tmp_path / "orig")
    return files[0].stat().st_size


def test_kmeans_1d_finds_separated_clusters():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(500) * 0.01 + c for c in (-2.0, 0.5, 3.0)])
    centroids, codes = kmeans_1d(x, 3, iters=30)
    assert torch.allclose(centroids, torch.tensor([-2.0, 0.5, 3.0]), atol=0.01)
    assert torch.equal(codes, torch.arange(3).repeat_interleave(500))


def test_k16_round_trip_and_file_is_at_most_a_fifth(tiny_bert_dir, tmp_path):
    r = _cluster("cluster-kmeans:k=16", tiny_bert_dir, tmp_path)
    assert torch.equal(r["out"], r["reloaded"])
    assert r["size"] <= 0.2 * _original_size(tiny_bert_dir, tmp_path)
    q = r["skeleton"].encoder.layer[0].attention.self.query
    assert q.weight.unique().numel() <= 16
    assert r["skeleton"].embeddings.word_embeddings.weight.unique().numel() <= 16
    state = r["model"].state_dict()
    assert "embeddings.word_embeddings.weight" not in state
    assert state["encoder.layer.0.attention.self.query.weight_codes"].numel() == 64 * 64 // 2  # 4 bits each
    assert r["facts"]["in_memory_compressed"] is False


def test_smaller_k_means_larger_error(tiny_bert_dir, tmp_path):
    errors = [float((r["out"] - r["ref"]).abs().mean())
              for r in (_cluster(f"cluster-kmeans:k={k}", tiny_bert_dir, tmp_path) for k in (64, 16, 4))]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_int8_codebook_and_odd_k(tiny_bert_dir, tmp_path):
    r = _cluster("cluster-kmeans:k=5,int8_codebook=true,embeddings=false", tiny_bert_dir, tmp_path)
    assert torch.equal(r["out"], r["reloaded"])
    state = r["model"].state_dict()
    assert state["encoder.layer.0.output.dense.weight_codebook"].dtype == torch.int8
    assert state["encoder.layer.0.output.dense.weight_codes"].numel() == -(-64 * 128 * 3 // 8)  # 3 bits each
    assert "embeddings.word_embeddings.weight" in state  # embeddings=false leaves them alone
    assert r["skeleton"].encoder.layer[0].output.dense.weight.unique().numel() <= 5


def test_conv_layers_are_clustered(tmp_path):
    from tests.helpers_models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    config = parse_method("cluster-kmeans:k=8")
    ctx = MethodContext(task=None, bundle=None)
    METHODS.get("cluster-kmeans").transform(model, config, ctx)
    assert set(ctx.facts["compact_layers"]) == {"features.0", "features.3", "fc"}
    assert model.features[3].weight.unique().numel() <= 8
    assert isinstance(model.features[3], nn.Conv2d) and model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
