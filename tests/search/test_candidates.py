"""The search space from the real registry: what applies, the declared ranges, and chains `run` accepts."""

from __future__ import annotations

from squeezebench.methods import METHODS, parse_chain
from squeezebench.search.candidates import build_candidates, needs_earlier, params_of
from squeezebench.search.strategy import FULL, SCREEN, Search, Settings
from squeezebench.search.tolerance import Scores, parse_tolerance
from squeezebench.search.trials import Rung, TrialResult


def _all_apply() -> dict:
    return {n: needs_earlier(n) if m.needs_original else None for n, m in METHODS.items()}


def test_kinds_and_what_does_not_apply():
    reasons = _all_apply()
    reasons["int8-dynamic"] = "no quantized engine here"
    c = build_candidates(reasons, max_transforms=2)
    assert "int8-dynamic" not in c.transforms and "original" not in c.transforms
    assert all(METHODS.get(n).is_export for n in c.exports) and c.exports
    assert all(METHODS.get(n).needs_original for n in c.followers) and "distill" in c.followers
    narrow = build_candidates(reasons, include=["prune-structured", "distill"], exclude=["distill"])
    assert narrow.transforms == ("prune-structured",) and not narrow.followers and not narrow.exports


def test_declared_ranges_become_the_space():
    ratio = {p.name: p for p in params_of(METHODS.get("prune-structured").config_cls)}["ratio"]
    assert ratio.kind == "float" and ratio.low == 0.0 and ratio.high < 1.0 and ratio.step
    onnx = {p.name: p for p in params_of(METHODS.get("onnx").config_cls)}
    assert onnx["exporter"].kind == "choice" and onnx["exporter"].choices == ("torchscript", "dynamo")
    unbounded = {p.name for p in params_of(METHODS.get("distill").config_cls)}
    assert "steps" not in unbounded  # POSITIVE has no upper end: left at its default


def test_every_proposed_chain_is_one_run_accepts(tmp_path):
    c = build_candidates(_all_apply(), max_transforms=2)
    chains = []

    class Accepting:
        def evaluate(self, chain, rung):
            if chain != "original":
                chains.append(chain)
                parse_chain(chain)  # bounds, order (exports last, followers not first): raises when invalid
            return TrialResult("ok", {"cpu_ms": 1.0 + len(chains)}, Scores.of([1.0] * 10))

    settings = Settings(("cpu_ms",), parse_tolerance("1pt"), 3600.0, 25, Rung(SCREEN, {"limit": 10}), Rung(FULL),
                        eta=3, seed=1)
    Search(c, Accepting(), settings, tmp_path / "s.json").run()
    assert len(set(chains)) == 25 and any("+" in ch for ch in chains)  # promoted ones are measured twice
    for chain in chains:  # nothing follows a quantizer but a runtime choice (an export converts float weights)
        links = [link.split(":")[0] for link in chain.split("+")]
        for i, name in enumerate(links[:-1]):
            if not METHODS.get(name).keeps_float:
                assert i == len(links) - 2 and METHODS.get(links[-1]).kind == "runtime", chain


def test_only_float_keeping_transforms_open_the_way_to_exports():
    c = build_candidates(_all_apply(), max_transforms=2)
    assert {"prune-structured", "cluster-kmeans", "distill"} <= c.float_keeping
    assert not {"int8-dynamic", "fp16", "gptq"} & c.float_keeping
    assert c.last_links([]) == c.exports == c.last_links(["prune-structured", "distill"])
    assert c.last_links(["int8-dynamic"]) == ("torch-compile",) == c.last_links(["prune-structured", "fp16"])
