"""student: a smaller model built from the teacher's layers, trained on the teacher's outputs (tiny config-built
BERT, Llama and Whisper): layer selection, KL falls below the initialisation's, the evaluated inputs are never
trained on, bad parameters are one line, and chains run through the real runner and reload."""

from __future__ import annotations

import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods import METHODS, MethodContext, apply_chain, chain_spec, parse_chain
from squeezebench.methods.lib.kd import downsample_curve, output_loss
from squeezebench.methods.student import (StudentConfig, budget_note, every_other, find_stack, fingerprint,
                                          input_digest, shrink, spread, targets_of)
from squeezebench.models.bundle import ModelBundle
from squeezebench.tasks import TASKS
from tests.conftest import TOPICS

TEXTS = [t for texts in TOPICS.values() for t in texts]


def _llama(layers: int = 4, seed: int = 0, vocab: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def _bert(layers: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def _whisper(decoder_layers: int = 4):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=decoder_layers,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        num_mel_bins=16, max_source_positions=10, max_target_positions=16, init_std=0.3,
                        decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=2)
    return WhisperForConditionalGeneration(cfg).eval()


def _windows(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 256, (1, 16), generator=g)} for _ in range(n)]


def _ctx(module, task, train, evaluated):
    return MethodContext(task=task, bundle=ModelBundle(module=module, source={}), calibration=lambda n: train[:n],
                         evaluated=lambda: evaluated)


def _kl(student, teacher, task, inputs) -> float:
    s_wrap, t_wrap = task.wrap(ModelBundle(module=student, source={})), task.wrap(ModelBundle(module=teacher,
                                                                                              source={}))
    with torch.no_grad():
        return sum(float(output_loss(s_wrap(**x), t_wrap(**x), "logits", 1.0)) for x in inputs) / len(inputs)


# --- layer selection ----------------------------------------------------------------------------------------------

def test_layer_selection_known_answers():
    assert every_other(6, 3) == [0, 2, 4]  # MiniLM-L6 -> 3, DistilBERT-style
    assert every_other(12, 6) == [0, 2, 4, 6, 8, 10]  # bert-base -> DistilBERT
    assert every_other(30, 15) == list(range(0, 30, 2))  # SmolLM2-135M -> half
    assert every_other(6, 4) == [0, 1, 3, 4]
    assert spread(4, 2) == [0, 3]  # whisper tiny.en's 4 decoder layers -> 2
    assert spread(32, 2) == [0, 31]  # distil-large-v3: first and last
    assert spread(32, 8) == [0, 4, 8, 13, 17, 22, 26, 31]
    assert spread(4, 1) == [0]
    assert targets_of([0, 2, 4], 6) == [1, 3, 5]  # each student layer stands for the last layer it replaces
    assert targets_of([0, 3], 4) == [2, 3]


def test_shrink_keeps_the_teachers_layers_and_renumbers_the_cache_slots():
    teacher = _llama(4)
    module = _llama(4)
    stack, why = find_stack(module, StudentConfig(layers=2))
    assert why is None and stack.path == "model.layers" and stack.config_key == "num_hidden_layers"
    shrink(module, stack, [0, 2], 4)
    assert len(module.model.layers) == 2 and module.config.num_hidden_layers == 2
    assert torch.equal(module.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in module.model.layers] == [0, 1]
    # generation with a KV cache runs on the smaller model (a cache slot per kept layer)
    out = module.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_whisper_keeps_its_encoder_and_a_spread_of_decoder_layers():
    teacher, module = _whisper(4), _whisper(4)
    stack, why = find_stack(module, StudentConfig(decoder_layers=2))
    assert why is None and stack.path == "model.decoder.layers" and stack.config_key == "decoder_layers"
    module.generation_config.alignment_heads = [[1, 0], [3, 2]]
    shrink(module, stack, spread(4, 2), 4)
    assert module.config.decoder_layers == 2 and module.config.encoder_layers == 2
    assert len(module.model.encoder.layers) == 2
    assert torch.equal(module.model.decoder.layers[1].fc1.weight, teacher.model.decoder.layers[3].fc1.weight)
    assert module.generation_config.alignment_heads == [[1, 2]]  # layer 3 is now layer 1; layer 1 was dropped


# --- training -----------------------------------------------------------------------------------------------------

def test_student_of_a_tiny_llama_gets_closer_to_its_teacher_than_its_initialisation(tmp_path):
    task = TASKS.get("causal-lm")
    train, held_out = _windows(256, seed=1), _windows(8, seed=2)
    teacher = _llama(4)
    init = _llama(4)
    stack, _ = find_stack(init, StudentConfig(layers=2))
    shrink(init, stack, every_other(4, 2), 4)
    module = _llama(4)
    ctx = _ctx(module, task, train, held_out)
    bundle = ctx.bundle
    apply_chain(bundle, parse_chain("student:layers=2,samples=256,steps=80,batch_size=16,lr=3e-3"), ctx, tmp_path)
    kl_init, kl_trained = _kl(init, teacher, task, held_out), _kl(bundle.module, teacher, task, held_out)
    assert kl_init > 0.01  # dropping half the layers changes the outputs
    assert kl_trained < 0.7 * kl_init, (kl_init, kl_trained)  # measured: 0.60 -> 0.33 on held-out windows
    facts = ctx.facts["student"]
    assert facts["kept_layers"] == [0, 2] and facts["teacher_layers"] == 4 and facts["matched_layers"] == 2
    assert facts["steps_done"] == 80 and not facts["stopped_by_budget"]
    curve = facts["loss_curve"]
    assert len(curve) == 20 and curve[-1][0] == 80 and curve[-1][1] < curve[0][1]
    assert not any(p.requires_grad for p in bundle.module.parameters())
    assert any(n.startswith("student: 2 of 4 layers of model.layers kept (0, 2)") for n in ctx.notes)


def test_whisper_student_trains_the_decoder_only(tmp_path):
    task = TASKS.get("speech-recognition")
    g = torch.Generator().manual_seed(0)
    inputs = [{"input_features": torch.randn(1, 16, 20, generator=g),
               "decoder_input_ids": torch.randint(3, 96, (1, 8), generator=g)} for _ in range(12)]
    teacher, module = _whisper(4), _whisper(4)
    ctx = _ctx(module, task, inputs[:8], inputs[8:])
    apply_chain(ctx.bundle, parse_chain("student:decoder_layers=2,steps=30,batch_size=4,lr=3e-3"), ctx, tmp_path)
    student = ctx.bundle.module
    assert len(student.model.decoder.layers) == 2
    for a, b in zip(student.model.encoder.parameters(), teacher.model.encoder.parameters()):
        assert torch.equal(a, b)  # frozen, as distil-whisper
    assert not torch.equal(student.model.decoder.layers[0].fc1.weight, teacher.model.decoder.layers[0].fc1.weight)
    facts = ctx.facts["student"]
    assert facts["frozen"] == ["model.encoder"] and facts["kept_layers"] == [0, 3] and facts["matched_layers"] == 2
    assert facts["loss_last"] < facts["loss_first"]


def test_the_evaluated_inputs_are_never_trained_on(tmp_path):
    task = TASKS.get("causal-lm")
    evaluated = _windows(6, seed=2)
    train = _windows(10, seed=1) + evaluated[:3]  # calibration that overlaps the evaluated examples
    seen: list[str] = []
    ctx = _ctx(_llama(2), task, train, evaluated)
    wrap = task.wrap

    def spying_wrap(bundle):  # every input the student is trained on passes through its wrapped forward
        inner = wrap(bundle)

        class Spy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, **x):
                seen.extend(input_digest({k: v[i:i + 1] for k, v in x.items()})
                            for i in range(next(iter(x.values())).shape[0]))
                return self.inner(**x)
        return Spy()

    task_spy = type("SpyTask", (), {"wrap": staticmethod(spying_wrap), "output_kind": "logits"})()
    ctx.task = task_spy
    apply_chain(ctx.bundle, parse_chain("student:layers=1,steps=4,batch_size=1"), ctx, tmp_path)
    facts = ctx.facts["student"]
    evaluated_digests = {input_digest(x) for x in evaluated}
    assert facts["overlapping_inputs_dropped"] == 3 and facts["training_inputs"] == 10
    assert facts["training_fingerprint"] == fingerprint([input_digest(x) for x in train[:10]])
    assert facts["evaluated_fingerprint"] == fingerprint(list(evaluated_digests))
    assert facts["training_fingerprint"] != facts["evaluated_fingerprint"]
    assert seen and not set(seen) & evaluated_digests


def test_no_training_inputs_outside_the_evaluated_ones_is_one_line(tmp_path):
    task = TASKS.get("causal-lm")
    evaluated = _windows(4, seed=2)
    ctx = _ctx(_llama(2), task, evaluated, evaluated)
    with pytest.raises(SqueezebenchError, match="no training inputs outside the evaluated examples") as err:
        apply_chain(ctx.bundle, parse_chain("student:layers=1,steps=2"), ctx, tmp_path)
    assert "\n" not in str(err.value)


def test_budget_stops_training_and_the_row_says_the_loss_is_still_high(tmp_path):
    task = TASKS.get("causal-lm")
    ctx = _ctx(_llama(4), task, _windows(8, seed=1), _windows(2, seed=2))
    apply_chain(ctx.bundle, parse_chain("student:layers=2,steps=500,batch_size=4,budget_s=0.001"), ctx, tmp_path)
    facts = ctx.facts["student"]
    assert facts["stopped_by_budget"] and facts["steps_done"] < 500 and facts["steps_requested"] == 500
    assert facts["loss_still_high"]
    assert len(facts["loss_curve"]) == min(20, facts["steps_done"])
    assert any("time budget (budget_s=0.001)" in n and "still high" in n for n in ctx.notes), ctx.notes


def test_budget_note_known_answers():
    from squeezebench.methods.lib.kd import KDResult

    config = StudentConfig(layers=1, steps=100)
    high = KDResult(first=1.0, last=0.8, steps_done=100, curve=[[50, 1.0], [100, 0.8]])
    assert budget_note(config, high) == ("student: training ended on all 100 steps with the loss still high (0.8, "
                                         "80 % of its start 1); quality may be collapsed; still falling: raise "
                                         "steps= or budget_s=")
    flat = KDResult(first=1.0, last=0.7, steps_done=100, curve=[[50, 1.0], [75, 0.7], [100, 0.69]])
    assert "levelled off: more steps may not help" in budget_note(config, flat)
    low = KDResult(first=1.0, last=0.1, steps_done=100, curve=[[50, 1.0], [100, 0.1]])
    assert budget_note(config, low) is None
    assert downsample_curve([4.0, 2.0, 3.0, 1.0], points=2) == [[2, 3.0], [4, 2.0]]


@pytest.mark.parametrize("module, kept", [(_bert, [0, 2]), (_whisper, [0, 3])])
def test_a_bare_student_keeps_half_the_layers(module, kept, tmp_path):
    """``student`` with no layer count is what a search tries: half the layers (half the decoder's)."""
    task = TASKS.get("speech-recognition" if module is _whisper else "text-classification")
    g = torch.Generator().manual_seed(0)
    inputs = ([{"input_features": torch.randn(1, 16, 20, generator=g),
                "decoder_input_ids": torch.randint(3, 96, (1, 8), generator=g)} for _ in range(6)]
              if module is _whisper else [{"input_ids": torch.randint(3, 128, (1, 8), generator=g),
                 "attention_mask": torch.ones(1, 8, dtype=torch.long)} for _ in range(6)])
    ctx = _ctx(module(), task, inputs[:4], inputs[4:])
    assert METHODS.get("student").check(parse_chain("student")[0], ctx) is None
    apply_chain(ctx.bundle, parse_chain("student:steps=2,batch_size=2"), ctx, tmp_path)
    assert ctx.facts["student"]["kept_layers"] == kept and ctx.facts["student"]["teacher_layers"] == 4


# --- refusals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, module, expected", [
    ("student:layers=4", _bert, "layers=4 keeps all 4 layers of the teacher; give fewer (e.g. layers=2)"),
    ("student:layers=7", _bert, "layers=7 keeps all 4 layers"),
    ("student:decoder_layers=2", _bert, "decoder_layers is for encoder-decoder models"),
    ("student:layers=1", _whisper, "an encoder-decoder model keeps its encoder: give decoder_layers=N"),
    ("student:decoder_layers=4", _whisper, "decoder_layers=4 keeps all 4 layers"),
    ("student", lambda: _bert(1), "the teacher has 1 layer in bert.encoder.layer: none to drop"),
])
def test_bad_parameters_for_the_model_are_one_clear_line(spec, module, expected, tmp_path):
    task = TASKS.get("text-classification")
    ctx = _ctx(module(), task, [], [])
    config = parse_chain(spec)[0]
    reason = METHODS.get("student").check(config, ctx)
    assert reason is not None and expected in reason and "\n" not in reason
    with pytest.raises(SqueezebenchError, match="student: ") as err:
        apply_chain(ctx.bundle, [config], ctx, tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spec, expected", [
    ("student:layers=0", "method student: layers must be >= 1, got 0"),
    ("student:decoder_layers=0", "method student: decoder_layers must be >= 1, got 0"),
    ("student:layers=2,steps=0", "method student: steps must be >= 1, got 0"),
    ("student:layers=2,budget_s=0", "method student: budget_s must be > 0, got 0.0"),
    ("student:layers=2,lr=-1", "method student: lr must be > 0, got -1.0"),
])
def test_bad_parameter_values_are_refused_when_parsed(spec, expected):
    with pytest.raises(SqueezebenchError) as err:
        parse_chain(spec)
    assert str(err.value) == expected


def test_student_must_be_the_first_link(tmp_path):
    task = TASKS.get("causal-lm")
    ctx = _ctx(_llama(2), task, _windows(4, seed=1), _windows(2, seed=2))
    with pytest.raises(SqueezebenchError, match="put it first in the chain"):
        apply_chain(ctx.bundle, parse_chain("int8-dynamic+student:layers=1,steps=2"), ctx, tmp_path)


# --- reload -------------------------------------------------------------------------------------------------------

def test_restore_drops_the_same_layers_on_a_teachers_skeleton(tmp_path):
    task = TASKS.get("causal-lm")
    ctx = _ctx(_llama(4), task, _windows(8, seed=1), _windows(2, seed=2))
    apply_chain(ctx.bundle, parse_chain("student:layers=2,steps=3,batch_size=4"), ctx, tmp_path)
    trained = ctx.bundle.module
    restore = METHODS.get("student").restore
    skeleton = restore(_llama(4, seed=5), parse_chain("student:layers=2")[0], ctx.facts)  # a python: source
    skeleton.load_state_dict(trained.state_dict(), strict=True)
    from_config = restore(_llama(2, seed=5), parse_chain("student:layers=2")[0], ctx.facts)  # saved student config
    from_config.load_state_dict(trained.state_dict(), strict=True)
    x = _windows(1, seed=3)[0]
    with torch.no_grad():
        assert torch.allclose(skeleton(**x).logits, trained(**x).logits)
    with pytest.raises(SqueezebenchError, match="expected 4 \\(teacher\\) or 2 \\(student\\)"):
        restore(_llama(3), parse_chain("student:layers=2")[0], ctx.facts)


def test_a_llama_student_exports_to_gguf_with_its_own_layer_count(tmp_path):
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from squeezebench.methods.export_gguf import bpe_vocab, llama_tensors, write_gguf
    from tests.methods.test_export_gguf import TEXT, bpe_tokenizer

    tok = bpe_tokenizer()
    model = _llama(4, vocab=len(tok))
    stack, _ = find_stack(model, StudentConfig(layers=2))
    shrink(model, stack, every_other(4, 2), 4)
    tensors, hparams = llama_tensors(model)
    assert hparams["block_count"] == 2 and not any(name.startswith("blk.2.") for name in tensors)
    write_gguf(tmp_path / "m.gguf", tensors, hparams, bpe_vocab(tok, hparams["vocab_size"]), "f32", "student")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    ids = tok(TEXT[:200], return_tensors="pt")["input_ids"][:, :32]
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, back(input_ids=ids).logits, atol=1e-4)


def test_student_chains_run_through_the_runner_and_reload(tmp_path, tiny_bert_dir, topic_csv):
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    config = RunConfig(models=[str(tiny_bert_dir)], task="text-classification", dataset=f"csv:{topic_csv}",
                       methods=["original", "student:layers=1,steps=4,batch_size=4",
                                "student:layers=1,steps=4,batch_size=4+onnx-int8-dynamic"],
                       out=tmp_path / "r", team="t", protocol=fast_protocol(limit=12, seq_len=32))
    recs = {r.method: r.dump() for r in Runner(config).run()}  # seq_len 32: the "(rep)" suffixes are kept
    pytorch, onnx = (chain_spec(parse_chain(m)) for m in config.methods[1:])
    assert pytorch == "student:steps=4,batch_size=4,layers=1"  # the label: the parameters that differ from defaults
    for method in (pytorch, onnx):
        rec = recs[method]
        assert rec["status"] == "ok", rec  # built, saved, reloaded by its runtime and measured
        student = rec["build"]["size"]["student"]
        assert student["kept_layers"] == [0] and student["teacher_layers"] == 2
        assert student["overlapping_inputs_dropped"] == 0 and student["training_inputs"] == 24
        assert student["training_fingerprint"] != student["evaluated_fingerprint"]
        assert student["evaluated_inputs"] == 12 and len(student["loss_curve"]) == 4
        assert 0 <= rec["quality"]["metrics"]["accuracy"]["value"] <= 1
    assert recs[pytorch]["runtime"]["name"] == "pytorch-eager"
    assert recs[onnx]["runtime"]["name"].startswith("onnxruntime")
    smaller = recs[pytorch]["build"]["size"]["weights_bytes"]
    assert smaller < recs["original"]["build"]["size"]["weights_bytes"]


def test_a_run_without_examples_left_to_train_on_fails_in_one_line(tmp_path, tiny_bert_dir, topic_csv):
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    config = RunConfig(models=[str(tiny_bert_dir)], task="text-classification", dataset=f"csv:{topic_csv}",
                       methods=["student:layers=1,steps=2"], out=tmp_path / "r", team="t",
                       protocol=fast_protocol())
    recs = [r.dump() for r in Runner(config).run()]
    rec = next(r for r in recs if r["method"] != "original")
    assert rec["status"] == "failed"
    assert "no training inputs outside the evaluated examples" in rec["build"]["error"]
    assert "--calibration-dataset" in rec["build"]["error"]


def test_a_student_trains_on_the_calibration_dataset_when_every_example_is_evaluated(tmp_path, tiny_bert_dir,
                                                                                      topic_csv):
    """--calibration-dataset: the student trains on other examples (a training split, other recordings) while every
    example of --dataset is evaluated; the same file as calibration data leaves nothing to train on."""
    import csv
    import dataclasses

    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for topic, texts in TOPICS.items():
            for t in texts:
                w.writerow([f"{t}, said again for training", topic])
    config = RunConfig(models=[str(tiny_bert_dir)], task="text-classification", dataset=f"csv:{topic_csv}",
                       methods=["original", "student:layers=1,steps=3,batch_size=4"], out=tmp_path / "r", team="t",
                       protocol=dataclasses.replace(fast_protocol(seq_len=32), calibration_dataset=f"csv:{train}"))
    recs = {r.method: r.dump() for r in Runner(config).run()}
    rec = recs["student:steps=3,batch_size=4,layers=1"]
    assert rec["status"] == "ok", rec
    student = rec["build"]["size"]["student"]
    assert student["training_inputs"] == sum(len(t) for t in TOPICS.values()) and student["evaluated_inputs"] == 36
    assert student["overlapping_inputs_dropped"] == 0
    assert rec["protocol"]["calibration_dataset"] == f"csv:{train}"
    same = dataclasses.replace(config, out=tmp_path / "s",
                               protocol=dataclasses.replace(config.protocol, calibration_dataset=f"csv:{topic_csv}"))
    rec = next(r.dump() for r in Runner(same).run() if r.method != "original")
    assert rec["status"] == "failed" and "36 of 36 calibration inputs are evaluated ones" in rec["build"]["error"]


def test_a_missing_calibration_dataset_is_one_line_before_anything_runs(tmp_path, tiny_bert_dir, topic_csv):
    import dataclasses

    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    config = RunConfig(models=[str(tiny_bert_dir)], task="text-classification", dataset=f"csv:{topic_csv}",
                       methods=["original"], out=tmp_path / "r", team="t",
                       protocol=dataclasses.replace(fast_protocol(), calibration_dataset=f"csv:{tmp_path}/none.csv"))
    with pytest.raises(SqueezebenchError, match="none.csv"):
        Runner(config).run()
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))


def test_whisper_student_runs_through_the_runner_and_reloads(tmp_path):
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol
    from tests.helpers_speech import librispeech_dir, tiny_whisper_dir

    model = tiny_whisper_dir(tmp_path / "whisper")
    student = "student:decoder_layers=1,steps=3,batch_size=2"
    config = RunConfig(models=[str(model)], task="speech-recognition",
                       dataset=f"audio-dir:{librispeech_dir(tmp_path / 'ls')}",
                       methods=["original", student, student + "+onnx"], out=tmp_path / "r", team="t",
                       protocol=fast_protocol(limit=2))
    recs = {r.method: r.dump() for r in Runner(config).run()}
    for method in (student, student + "+onnx"):
        rec = recs[chain_spec(parse_chain(method))]
        assert rec["status"] == "ok", rec  # the saved student reloads as a 1-decoder-layer Whisper and transcribes
        facts = rec["build"]["size"]["student"]
        assert facts["kept_layers"] == [0] and facts["frozen"] == ["model.encoder"]
        assert facts["training_inputs"] == 4 and facts["evaluated_inputs"] == 2
        assert facts["overlapping_inputs_dropped"] == 0
        assert rec["quality"]["metrics"]["wer"]["value"] >= 0


def test_sentence_embedding_student_gets_closer_in_cosine(tmp_path):
    from transformers import BertConfig, BertModel

    def bert(seed=0):
        torch.manual_seed(seed)
        return BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)).eval()

    task = TASKS.get("sentence-embedding")
    g = torch.Generator().manual_seed(0)
    inputs = [{"input_ids": torch.randint(1, 128, (1, 12), generator=g), "attention_mask": torch.ones(1, 12,
                                                                                                    dtype=torch.long)}
              for _ in range(136)]
    train, held_out = inputs[:128], inputs[128:]
    teacher, init = bert(), bert()
    shrink(init, find_stack(init, StudentConfig(layers=2))[0], [0, 2], 4)
    ctx = _ctx(bert(), task, train, held_out)
    apply_chain(ctx.bundle, parse_chain("student:layers=2,samples=128,steps=60,batch_size=16,lr=3e-3"), ctx, tmp_path)

    def distance(module):  # 1 - mean cosine to the teacher's embeddings on held-out inputs
        s, t = task.wrap(ModelBundle(module=module, source={})), task.wrap(ModelBundle(module=teacher, source={}))
        with torch.no_grad():
            return float(sum(1 - torch.nn.functional.cosine_similarity(s(**x), t(**x)).mean() for x in held_out)
                         / len(held_out))

    before, after = distance(init), distance(ctx.bundle.module)
    assert before > 0.1 and after < 0.5 * before, (before, after)  # measured: 0.72 -> 0.04


def test_whisper_students_train_on_the_teachers_transcripts_not_the_references():
    task = TASKS.get("speech-recognition")
    teacher = _whisper(2).eval()
    g = torch.Generator().manual_seed(3)
    inputs = [{"input_features": torch.randn(1, 16, 20, generator=g),
               "decoder_input_ids": torch.randint(3, 96, (1, 8), generator=g)} for _ in range(3)]
    labelled, note = task.pseudo_labelled(teacher, ModelBundle(module=teacher, source={}), inputs)
    assert "3 training utterances" in note
    for item, new in zip(inputs, labelled):
        assert torch.equal(new["input_features"], item["input_features"])
        assert new["decoder_input_ids"].shape == item["decoder_input_ids"].shape
        with torch.no_grad():
            said = teacher.generate(input_features=item["input_features"], max_new_tokens=4, do_sample=False)[0]
        assert new["decoder_input_ids"][0, :len(said)].tolist() == said[:8].tolist()
    ctx = _ctx(_whisper(4), task, inputs[:2], inputs[2:])
    apply_chain(ctx.bundle, parse_chain("student:decoder_layers=2,steps=2,batch_size=1"), ctx, None)
    assert "pseudo-labels" in ctx.facts["student"]["pseudo_labels"] and any("pseudo-labels" in n for n in ctx.notes)
    refs = _ctx(_whisper(4), task, inputs[:2], inputs[2:])
    apply_chain(refs.bundle, parse_chain("student:decoder_layers=2,steps=2,batch_size=1,pseudo_labels=false"), refs,
                None)
    assert "pseudo_labels" not in refs.facts["student"]


def _trained(tmp_path, spec, work_dir, monkeypatch=None, fail_at=None):
    """A tiny Llama student trained by ``spec`` with its checkpoints in ``work_dir``; ``fail_at``: the training is
    killed (an exception from the loss) at that step, after the checkpoint of the step before was written."""
    import squeezebench.methods.lib.kd as kd

    if fail_at is not None:
        calls, real = {"n": 0}, kd.output_loss

        def dying_loss(*a, **k):
            calls["n"] += 1
            if calls["n"] > fail_at:
                raise KeyboardInterrupt("killed")
            return real(*a, **k)
        monkeypatch.setattr(kd, "output_loss", dying_loss)
    task = TASKS.get("causal-lm")
    ctx = _ctx(_llama(4), task, _windows(64, seed=1), _windows(4, seed=2))
    ctx.work_dir = work_dir
    try:
        apply_chain(ctx.bundle, parse_chain(spec), ctx, tmp_path)
    finally:
        if fail_at is not None:
            monkeypatch.setattr(kd, "output_loss", real)
    return ctx


def test_a_killed_student_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    """Killed after 7 of 20 steps and run again, the student ends with the weights, curve and step count of an
    uninterrupted training (same seed, same batch order, AdamW and scheduler states restored)."""
    import squeezebench.methods.lib.kd as kd

    monkeypatch.setattr(kd, "CHECKPOINT_EVERY_S", 0.0)
    spec = "student:layers=2,samples=64,steps=20,batch_size=8,lr=3e-3"
    whole = _trained(tmp_path / "a", spec, tmp_path / "work-a", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _trained(tmp_path / "b", spec, tmp_path / "work-b", monkeypatch, fail_at=7)
    [saved] = list((tmp_path / "work-b").glob("student-*.pt"))
    assert len(torch.load(saved, weights_only=False)["losses"]) == 7
    resumed = _trained(tmp_path / "b", spec, tmp_path / "work-b", monkeypatch)
    f_whole, f_resumed = whole.facts["student"], resumed.facts["student"]
    assert f_whole["resumed_from_step"] == 0 and f_resumed["resumed_from_step"] == 7
    assert f_resumed["steps_done"] == 20 and [v for pt in f_resumed["loss_curve"] for v in pt] == pytest.approx(
        [v for pt in f_whole["loss_curve"] for v in pt], rel=1e-5)
    for (name, a), (_, b) in zip(whole.bundle.module.state_dict().items(), resumed.bundle.module.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any("resumed from step 7 of its checkpoint" in n for n in resumed.notes)


def test_a_budget_stopped_student_continues_with_a_larger_budget_and_a_trained_one_is_reused(tmp_path, monkeypatch):
    import squeezebench.methods.lib.kd as kd

    monkeypatch.setattr(kd, "CHECKPOINT_EVERY_S", 0.0)
    work = tmp_path / "work"
    first = _trained(tmp_path, "student:layers=2,samples=64,steps=400,batch_size=8,budget_s=0.3", work, monkeypatch)
    done = first.facts["student"]["steps_done"]
    assert first.facts["student"]["stopped_by_budget"] and 0 < done < 400
    more = _trained(tmp_path, "student:layers=2,samples=64,steps=400,batch_size=8,budget_s=600", work, monkeypatch)
    f = more.facts["student"]
    assert f["resumed_from_step"] == done and f["steps_done"] == 400 and not f["stopped_by_budget"]
    assert f["checkpoint"] == first.facts["student"]["checkpoint"]  # the budget is not part of the key
    again = _trained(tmp_path, "student:layers=2,samples=64,steps=400,batch_size=8,budget_s=600", work, monkeypatch)
    assert again.facts["student"]["resumed_from_step"] == 400 and again.facts["student"]["steps_done"] == 400
    for a, b in zip(more.bundle.module.parameters(), again.bundle.module.parameters()):
        assert torch.equal(a, b)
    other = _trained(tmp_path, "student:layers=2,samples=64,steps=40,batch_size=8,lr=1e-3", work, monkeypatch)
    assert other.facts["student"]["resumed_from_step"] == 0  # another training is never resumed from this one
    assert len(list(work.glob("student-*.pt"))) == 2
