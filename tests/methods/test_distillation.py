"""distill after prune-structured on a tiny config-built BERT: it moves the student back towards the teacher."""

from __future__ import annotations

import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods import METHODS, MethodContext, apply_chain, parse_chain
from squeezebench.methods.distillation import block_names, output_loss, trainable_weight_count
from squeezebench.models.bundle import ModelBundle
from squeezebench.tasks import TASKS
from squeezebench.tasks import text_common
from tests.conftest import TOPICS

TEXTS = [t for texts in TOPICS.values() for t in texts]


def _bundle(path):
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    return ModelBundle(module=BertModel.from_pretrained(path).eval(), source={},
                       tokenizer=AutoTokenizer.from_pretrained(path))


def _ctx(bundle, task):
    inputs = [text_common.fixed_batch(bundle, [t], 1, 16) for t in TEXTS * 4]
    return MethodContext(task=task, bundle=bundle, calibration=lambda n: inputs[:n])


def _cosine_to(teacher_out, bundle, task):
    enc = text_common.fixed_batch(bundle, TEXTS, len(TEXTS), 16)
    with torch.no_grad():
        out = task.wrap(bundle).eval()(**enc)
    return float(torch.nn.functional.cosine_similarity(out, teacher_out).mean())


def test_distill_recovers_agreement_lost_by_pruning(tiny_bert_dir, tmp_path):
    task = TASKS.get("sentence-embedding")
    teacher = _bundle(tiny_bert_dir)
    enc = text_common.fixed_batch(teacher, TEXTS, len(TEXTS), 16)
    with torch.no_grad():
        teacher_out = task.wrap(teacher).eval()(**enc)

    pruned = _bundle(tiny_bert_dir)
    apply_chain(pruned, parse_chain("prune-structured:ratio=0.5"), _ctx(pruned, task), tmp_path)
    cos_pruned = _cosine_to(teacher_out, pruned, task)

    distilled = _bundle(tiny_bert_dir)
    ctx = _ctx(distilled, task)
    apply_chain(distilled, parse_chain("prune-structured:ratio=0.5+distill:steps=60,batch_size=8,lr=1e-3"), ctx,
                tmp_path)
    cos_distilled = _cosine_to(teacher_out, distilled, task)
    facts = ctx.facts["distill"]
    assert facts["blocks_matched"] == 2  # encoder.layer.0 and .1 keep their hidden size
    assert facts["loss_last"] < facts["loss_first"]
    # random-weight embeddings are close to each other, so compare the distance left: it must at least halve
    assert 1 - cos_distilled < 0.5 * (1 - cos_pruned), (cos_pruned, cos_distilled)
    # the pruned shapes are kept (distill changes values, not structure) and nothing is left trainable
    assert distilled.module.encoder.layer[0].intermediate.dense.out_features == 64
    assert not any(p.requires_grad for p in distilled.module.parameters())
    assert any("distill:" in n for n in ctx.notes)


def test_distill_cannot_start_a_chain():
    with pytest.raises(SqueezebenchError, match="put it after one"):
        parse_chain("distill")
    with pytest.raises(SqueezebenchError, match="put it after one"):
        parse_chain("original+distill")


def test_distill_refuses_weights_it_cannot_train(tiny_bert_dir, tmp_path):
    task = TASKS.get("sentence-embedding")
    bundle = _bundle(tiny_bert_dir)
    with pytest.raises(SqueezebenchError, match="float weights"):
        apply_chain(bundle, parse_chain("int8-dynamic+distill:steps=1"), _ctx(bundle, task), tmp_path)


def test_block_names_and_trainable_count(tiny_bert_dir):
    bundle = _bundle(tiny_bert_dir)
    assert block_names(bundle.module, bundle.module) == ["encoder.layer.0", "encoder.layer.1"]
    assert trainable_weight_count(bundle.module) == 2 * 6 + 1  # 6 Linear per layer + pooler


def test_output_loss_is_zero_at_the_target_and_positive_elsewhere():
    t = torch.randn(4, 10)
    for kind in ("embedding", "logits"):
        assert float(output_loss(t, t, kind, 2.0)) == pytest.approx(0.0, abs=1e-6)
        assert float(output_loss(t + torch.randn(4, 10), t, kind, 2.0)) > 0.01


def test_distill_is_registered_with_its_needs():
    m = METHODS.get("distill")
    assert m.needs_original and m.needs_calibration


def test_distill_recomputes_teacher_outputs_that_do_not_fit(tiny_bert_dir, tmp_path, monkeypatch):
    from squeezebench.methods import distillation

    monkeypatch.setattr(distillation, "CACHE_BYTES", 0)
    task = TASKS.get("sentence-embedding")
    bundle = _bundle(tiny_bert_dir)
    ctx = _ctx(bundle, task)
    apply_chain(bundle, parse_chain("prune-structured:ratio=0.5+distill:steps=20,batch_size=8,lr=1e-3"), ctx, tmp_path)
    facts = ctx.facts["distill"]
    assert facts["teacher_outputs_cached"] is False
    assert facts["loss_last"] < facts["loss_first"]


def test_distill_trains_a_pruned_causal_lm_on_logits(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    task = TASKS.get("causal-lm")
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tok(" ".join(TEXTS) * 4, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    windows = [{"input_ids": ids[i * 16:(i + 1) * 16].unsqueeze(0)} for i in range(16)]
    torch.manual_seed(0)
    bundle = ModelBundle(module=LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval(), source={}, tokenizer=tok)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: windows[:n])
    apply_chain(bundle, parse_chain("prune-structured:ratio=0.5+distill:steps=30,batch_size=4,lr=1e-3"), ctx, tmp_path)
    facts = ctx.facts["distill"]
    assert facts["blocks_matched"] == 2  # model.layers.0 and .1
    assert facts["loss_last"] < facts["loss_first"]
    assert bundle.module.model.layers[0].mlp.down_proj.in_features == 64


def test_parameters_outside_the_trained_ones_get_no_gradient():
    """A student's frozen part (Whisper's encoder) is not trained and must not be differentiated either: its
    gradients were computed and thrown away, 2.5x the time of a Whisper-tiny step on CPU."""
    import copy

    import torch
    from torch import nn

    from squeezebench.methods.lib.kd import KDSettings, train_kd

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[2].weight.mul_(0.5)
    frozen_before = student[0].weight.detach().clone()
    seen = []
    student[0].weight.register_hook(lambda g: seen.append(g))  # called only if autograd differentiates it
    batches = [{"input": torch.randn(4, 8)} for _ in range(3)]

    class Call(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input):  # noqa: A002
            return self.inner(input)

    result = train_kd(Call(student), Call(teacher), batches, list(student[2].parameters()), "logits",
                      KDSettings(steps=5, lr=1e-2, temperature=1.0, hidden_weight=0.0, seed=0), [], student, teacher)
    assert result.steps_done == 5 and result.last < result.first
    assert seen == [] and student[0].weight.grad is None and torch.equal(student[0].weight, frozen_before)
