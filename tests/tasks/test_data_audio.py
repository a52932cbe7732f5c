import json

import numpy as np
import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.data import DatasetOptions, load_dataset
from squeezebench.tasks.data_audio import audio_duration_s, load_audio
from squeezebench.tasks import TASKS
from tests.helpers_speech import TRANSCRIPTS, librispeech_dir, write_tone

SPEECH = TASKS.get("speech-recognition")


def test_audio_dir_reads_librispeech_layout(tmp_path):
    root = librispeech_dir(tmp_path / "ls")
    ds = load_dataset(f"audio-dir:{root}")
    assert [ex["id"] for ex in ds.examples] == list(TRANSCRIPTS)
    assert ds.examples[1]["text"] == "THE CAT SAT ON THE MAT"  # also the last line, which has no newline
    assert all(ex["audio"].endswith(".flac") for ex in ds.examples)
    assert audio_duration_s(ds.examples[0]["audio"]) == pytest.approx(0.5)


def test_audio_dir_accepts_wav(tmp_path):
    ds = load_dataset(f"audio-dir:{librispeech_dir(tmp_path / 'ls', suffix='.wav')}")
    assert ds.examples[0]["audio"].endswith(".wav")


def test_missing_transcript_file_is_one_line(tmp_path):
    write_tone(tmp_path / "a.flac", 0.2)
    with pytest.raises(SqueezebenchError, match=r"no \*\.trans\.txt transcript file.*a\.flac"):
        load_dataset(f"audio-dir:{tmp_path}")


def test_missing_audio_file_names_it(tmp_path):
    root = librispeech_dir(tmp_path / "ls")
    (root / "100" / "1" / "100-1-0002.flac").unlink()
    with pytest.raises(SqueezebenchError, match=r"100-1.trans.txt:3: audio file 100-1-0002.flac"):
        load_dataset(f"audio-dir:{root}")


def test_resampling_and_mono(tmp_path):
    import soundfile

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 200 * t)], axis=1).astype(np.float32)
    soundfile.write(str(tmp_path / "s.wav"), stereo, 8000)
    audio = load_audio(str(tmp_path / "s.wav"), 16000)
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    # a 200 Hz sine stays a 200 Hz sine: the spectrum peaks at 200 Hz
    assert np.argmax(np.abs(np.fft.rfft(audio))) == 200
    same = load_audio(str(tmp_path / "s.wav"), 8000)
    assert np.allclose(same, stereo[:, 0], atol=1e-4)


def test_undecodable_audio_is_one_line(tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"this is not audio at all")
    with pytest.raises(SqueezebenchError, match="cannot decode audio file .*broken.flac") as exc:
        load_audio(str(bad), 16000)
    assert "\n" not in str(exc.value)


def test_csv_and_jsonl_audio_rows(tmp_path):
    write_tone(tmp_path / "x.flac", 0.3)
    (tmp_path / "rows.csv").write_text("path,sentence\nx.flac,HELLO THERE\n")
    ds = load_dataset(f"csv:{tmp_path / 'rows.csv'}", DatasetOptions(text_column="sentence", audio_column="path"),
                      SPEECH.examples_from_rows)
    assert ds.examples == [{"audio": str(tmp_path / "x.flac"), "text": "HELLO THERE", "id": "x"}]
    (tmp_path / "rows.jsonl").write_text(json.dumps({"audio": str(tmp_path / "x.flac"), "text": "HI"}) + "\n")
    assert load_dataset(f"jsonl:{tmp_path / 'rows.jsonl'}", DatasetOptions(),
                        SPEECH.examples_from_rows).examples[0]["text"] == "HI"
    # the speech task reads the audio column; the shared loader alone reads text rows (no sniffing of columns)
    assert load_dataset(f"jsonl:{tmp_path / 'rows.jsonl'}").examples == [{"text": "HI"}]
    with pytest.raises(SqueezebenchError, match="has no column 'audio' .*pass --audio-column"):
        load_dataset(f"csv:{tmp_path / 'rows.csv'}", DatasetOptions(text_column="sentence"), SPEECH.examples_from_rows)


def test_csv_audio_row_with_missing_file(tmp_path):
    (tmp_path / "rows.csv").write_text("audio,text\nnope.flac,HELLO\n")
    with pytest.raises(SqueezebenchError, match=r"row 1: audio file .*nope.flac' does not exist"):
        load_dataset(f"csv:{tmp_path / 'rows.csv'}", DatasetOptions(), SPEECH.examples_from_rows)


def test_decoded_audio_dicts(tmp_path):
    audio = load_audio({"array": np.ones(800, dtype=np.float32), "sampling_rate": 8000}, 16000)
    assert audio.shape == (1600,)
