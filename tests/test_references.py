import numpy as np

from squeezebench import references
from squeezebench.atomic import atomic_write_text


def test_round_trip_and_corrupt_file(tmp_path):
    path = tmp_path / "refs" / "m.npz"
    references.save(path, {"embeddings": np.eye(3)})
    arrays, problem = references.load(path)
    assert problem is None and np.array_equal(arrays["embeddings"], np.eye(3))
    assert [p.name for p in path.parent.iterdir()] == ["m.npz"]  # no temp file left
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    arrays, problem = references.load(path)
    assert arrays is None and "unreadable" in problem and "rewritten" in problem
    assert not references.readable(path) and not references.readable(tmp_path / "missing.npz")


def test_failed_write_keeps_the_old_file(tmp_path):
    from squeezebench.atomic import atomic_write

    path = tmp_path / "README.md"
    path.write_text("old")
    path.chmod(0o640)

    def half_then_disk_full(fh):
        fh.write(b"ne")
        raise OSError(28, "No space left on device")

    try:
        atomic_write(path, half_then_disk_full)
    except OSError as exc:
        assert exc.errno == 28
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # the temp file is gone
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
