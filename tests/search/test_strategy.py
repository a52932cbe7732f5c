"""The search logic on a fake evaluator whose quality (per example) and latency per chain are known: it finds the
known optimum, judges the tolerance by the paired interval (not the point estimate), resumes after a kill, and says
one clear line for an unmeetable tolerance, an empty candidate set or a budget too small for a full trial."""

from __future__ import annotations

import json

import numpy as np
import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.search.candidates import Candidates, Param, check_not_empty
from squeezebench.search.strategy import FULL, SCREEN, Search, Settings, parse_budget
from squeezebench.search.tolerance import Scores, judge, parse_tolerance
from squeezebench.search.trials import Rung, TrialResult

N = 1000  # examples of the full rung
SCREEN_N = 300
RNG = np.random.default_rng(7)
ORIGINAL = (RNG.random(N) < 0.9).astype(float)  # the original is right on ~90 % of the examples


def flipped(wrong: int = 0, noisy: bool = False) -> np.ndarray:
    """The original's correctness with ``wrong`` right answers (spread evenly) turned wrong; ``noisy``: every example the original
    gets wrong turned right and the next one it gets right turned wrong (the point estimate does not move, in any
    prefix either, but the paired interval widens)."""
    out = ORIGINAL.copy()
    right = np.flatnonzero(out == 1)
    out[right[np.linspace(0, len(right) - 1, wrong).astype(int)]] = 0  # spread: a prefix loses its share
    if noisy:
        for w in np.flatnonzero(ORIGINAL == 0):
            nxt = right[right > w]
            if len(nxt):
                out[w], out[nxt[0]] = 1, 0
    return out


# chain -> (cpu ms, size MB, per-example correctness). Known optimum within 1pt: "quant+export" (4 ms, 2 wrong);
# faster ones lose too much ("prune": 40 wrong = 4pt), or have a small point drop with a wide interval ("noisy").
TABLE = {
    "original": (10.0, 100.0, ORIGINAL),
    "quant": (6.0, 30.0, flipped(2)),
    "prune": (3.0, 60.0, flipped(40)),
    "noisy": (2.0, 50.0, flipped(0, noisy=True)),
    "export": (8.0, 100.0, flipped(0)),
    "quant+export": (4.0, 30.0, flipped(2)),
    "prune+export": (2.5, 60.0, flipped(40)),
    "noisy+export": (1.5, 50.0, flipped(0, noisy=True)),
}


class FakeEvaluator:
    def __init__(self, fail_on_call: int = 0):
        self.calls: list[tuple[str, str]] = []
        self.fail_on_call = fail_on_call

    def evaluate(self, chain: str, rung: Rung) -> TrialResult:
        self.calls.append((chain, rung.name))
        if self.fail_on_call and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        ms, mb, correct = TABLE[chain]
        n = rung.overrides.get("limit", N)
        return TrialResult("ok", {"cpu_ms": ms, "size_mb": mb}, Scores.of(correct[:n]), [f"{chain}@{rung.name}"])


CANDIDATES = Candidates(transforms=("quant", "prune", "noisy"), followers=(), exports=("export",),
                        float_keeping=frozenset({"quant", "prune", "noisy"}))  # (fake links: any may precede "export")


def settings(objectives=("cpu_ms",), tolerance="1pt", budget=3600.0, trials=7) -> Settings:
    return Settings(objectives, parse_tolerance(tolerance), budget, trials, Rung(SCREEN, {"limit": SCREEN_N}),
                    Rung(FULL), eta=1, seed=3)


def test_finds_the_known_optimum_and_rejects_by_interval(tmp_path):
    ev = FakeEvaluator()
    outcome = Search(CANDIDATES, ev, settings(), tmp_path / "search.json").run()
    assert outcome.recommended is not None and outcome.recommended.chain == "quant+export"
    assert "quant+export is recommended" in outcome.why and "paired 95 % interval" in outcome.why
    chains = [t.chain for t in outcome.trials]
    assert len(chains) == len(set(chains)) and set(chains) <= set(TABLE)  # each proposal measured once
    # the noisy variants are the fastest and their point drop is within 1pt, their paired interval is not: refused
    noisy = [t for t in outcome.trials if t.chain.startswith("noisy") and t.full is not None]
    assert noisy and all(abs(t.full.drop) <= 0.01 and t.full.high > 0.01 and not t.full.within for t in noisy)
    front = [t.chain for t in outcome.front]
    assert front[0] == "quant+export" and not any(c.startswith(("noisy", "prune")) for c in front)
    # every chain was measured on the subset first; only promoted ones on the full protocol
    assert [c for c, r in ev.calls if r == SCREEN] == ["original"] + chains
    assert not any(c.startswith("prune") and r == FULL for c, r in ev.calls)  # wholly beyond the tolerance on the
    # screen: never promoted


def test_paired_interval_is_what_decides():
    original = Scores.of(ORIGINAL)
    tol = parse_tolerance("1pt")
    steady, noisy = judge(Scores.of(flipped(2)), original, tol), judge(Scores.of(flipped(0, noisy=True)), original, tol)
    assert steady.within and steady.drop == pytest.approx(0.002)
    assert abs(noisy.drop) < 0.01 and not noisy.within and noisy.plausible
    # unpaired, the same two would look alike: the pairing is what keeps the steady one's interval narrow
    assert steady.high - steady.low < (noisy.high - noisy.low) / 5
    # lower-is-better metrics (WER: errors per word) count an increase as the drop
    wer_orig = Scores.of([1, 2, 0, 1] * 50, [10] * 200, higher_is_better=False)
    worse = Scores.of([2, 3, 1, 2] * 50, [10] * 200, higher_is_better=False)
    assert judge(worse, wer_orig, parse_tolerance("0.05")).drop == pytest.approx(0.1)


def test_two_objectives_give_a_front(tmp_path):
    outcome = Search(CANDIDATES, FakeEvaluator(), settings(("cpu_ms", "size_mb")), tmp_path / "s.json").run()
    chains = [t.chain for t in outcome.front]
    # quant is dominated by quant+export (slower, same size, same drop); export stays: it loses no quality
    assert chains[0] == "quant+export" and set(chains) <= {"quant+export", "export"}


def test_the_original_bounds_the_front():
    from squeezebench.search.state import RungResult, Trial
    from squeezebench.search.strategy import pareto_trials

    def trial(chain, ms, drop):
        return Trial(0, chain, {}, {}, "full", full=RungResult("ok", {"cpu_ms": ms}, drop=drop))

    slow, fast = trial("slow", 12.0, 0.0), trial("fast", 5.0, 0.004)
    base = RungResult("ok", {"cpu_ms": 10.0})
    assert [t.chain for t in pareto_trials([slow, fast], ("cpu_ms",), base)] == ["fast"]  # slow: the original wins
    assert [t.chain for t in pareto_trials([slow, fast], ("cpu_ms",))] == ["fast", "slow"]


def test_resumes_after_a_kill(tmp_path):
    path = tmp_path / "search.json"
    killer = FakeEvaluator(fail_on_call=5)  # original screen, original full, then trials; killed in the middle
    with pytest.raises(KeyboardInterrupt):
        Search(CANDIDATES, killer, settings(), path).run()
    saved = json.loads(path.read_text())
    done = [t["chain"] for t in saved["trials"] if t["status"] != "running"]
    running = [t["chain"] for t in saved["trials"] if t["status"] == "running"]
    assert len(running) == 1 and saved["baseline"]["full"]["status"] == "ok"
    ev = FakeEvaluator()
    outcome = Search(CANDIDATES, ev, settings(), path).run()
    again = [c for c, r in ev.calls if c != "original"]
    assert not set(done) & set(again)  # finished trials are not measured again
    assert again[0] == running[0]  # the interrupted one is measured first
    assert outcome.recommended.chain == "quant+export" and len(outcome.trials) == 7
    spent = Search(CANDIDATES, FakeEvaluator(), settings(budget=1e-9), path).run()  # resumed with its budget spent
    assert spent.recommended.chain == "quant+export"  # the outcome of what was measured, nothing new
    assert any("spent by the 7 trials of this state; nothing new ran" in p for p in spent.problems), spent.problems
    with pytest.raises(SqueezebenchError, match="other settings"):
        Search(CANDIDATES, FakeEvaluator(), settings(tolerance="2pt"), path)


def test_no_candidate_meets_the_tolerance(tmp_path):
    lossy = Candidates(("quant", "prune", "noisy"), (), ())  # each loses quality (export alone loses none)
    outcome = Search(lossy, FakeEvaluator(), settings(tolerance="0.1pt"), tmp_path / "s.json").run()
    assert outcome.recommended is None
    assert any(p.startswith("no candidate meets --max-drop 0.1pt by its paired interval; the closest is quant")
               for p in outcome.problems)
    assert "keep the original" in outcome.why
    assert outcome.trials  # what was measured is kept


def test_budget_too_small_for_a_full_trial(tmp_path):
    clock = FakeClock()
    ev = TimedEvaluator(clock)
    outcome = Search(CANDIDATES, ev, settings(budget=130.0), tmp_path / "s.json", clock=clock).run()
    assert any("budget too small for a full trial" in p for p in outcome.problems)
    assert outcome.recommended is None and outcome.trials  # the screened trials are kept
    assert [c for c, r in ev.calls if r == FULL] == ["original"]


def test_empty_candidate_set_and_bad_input():
    with pytest.raises(SqueezebenchError, match="nothing to search"):
        check_not_empty(Candidates((), (), ()), "m", "t", "cpu")
    with pytest.raises(SqueezebenchError, match="--max-drop"):
        parse_tolerance("a lot")
    with pytest.raises(SqueezebenchError, match="--budget"):
        parse_budget("0m")
    assert parse_budget("30m") == 1800 and parse_tolerance("2%").absolute(0.5) == pytest.approx(0.01)


def test_parameters_are_searched_in_their_ranges(tmp_path):
    seen = []

    def wrong(ratio: float) -> int:
        return int(round(ratio * 60))  # ratio 0.1 -> 6 wrong of 1000: 0.6pt

    class Ratio:
        def evaluate(self, chain, rung):
            seen.append(chain)
            ratio = float(chain.split("=")[1]) if "=" in chain else 0.0
            return TrialResult("ok", {"cpu_ms": 10 * (1 - ratio)},
                               Scores.of(flipped(wrong(ratio))[:rung.overrides.get("limit", N)]))

    grid = [round(0.05 * i, 2) for i in range(11)]
    space = Candidates(("prune",), (), (), {"prune": (Param("ratio", "float", 0.0, 0.5, step=0.05),)})
    outcome = Search(space, Ratio(), settings(trials=len(grid)), tmp_path / "s.json").run()
    assert {float(c.split("=")[1]) for c in seen if "=" in c} == set(grid)  # the whole range, nothing outside
    # the known optimum: the largest ratio whose paired interval stays within 1pt (judged here independently)
    original = Scores.of(ORIGINAL)
    best = max(r for r in grid if judge(Scores.of(flipped(wrong(r))), original, parse_tolerance("1pt")).within)
    assert 0 < best < 0.5
    assert outcome.recommended.chain == f"prune:ratio={best:g}"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class TimedEvaluator(FakeEvaluator):
    """A screen costs 10 s, a full measurement 100 s."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def evaluate(self, chain, rung):
        self.clock.t += 10.0 if rung.name == SCREEN else 100.0
        return super().evaluate(chain, rung)


def test_each_export_alone_is_tried_first_and_not_again_on_resume(tmp_path):
    space = Candidates(("quant", "prune", "noisy"), (), ("export", "other"), float_keeping=frozenset({"prune"}))

    class Any:
        def __init__(self):
            self.chains = []

        def evaluate(self, chain, rung):
            if chain != "original" and rung.name == SCREEN:
                self.chains.append(chain)
            return TrialResult("ok", {"cpu_ms": 10.0 - len(self.chains) % 7, "size_mb": 1.0},
                               Scores.of(ORIGINAL))

    first = Any()
    state = tmp_path / "s.json"
    Search(space, first, settings(trials=2), state).run()
    assert first.chains == ["export", "other"]  # (fake methods: their parameters are the sampler's)
    again = Any()
    Search(space, again, settings(trials=6), state).run()  # resumed: the exports alone are not tried again
    assert again.chains and not {"export", "other"} & set(again.chains)


def test_exports_alone_start_at_their_defaults(tmp_path):
    from squeezebench.search.candidates import build_candidates
    from tests.search.test_candidates import _all_apply

    space = build_candidates(_all_apply(), include=["openvino-int8", "onnx"], max_transforms=1)
    seen = []

    class Recording:
        def evaluate(self, chain, rung):
            if chain != "original" and rung.name == SCREEN:
                seen.append(chain)
            return TrialResult("ok", {"cpu_ms": 5.0, "size_mb": 1.0}, Scores.of(ORIGINAL))

    Search(space, Recording(), settings(trials=2), tmp_path / "s.json").run()
    from squeezebench.methods import METHODS, parse_chain

    assert sorted(c.split(":")[0] for c in seen) == ["onnx", "openvino-int8"]
    for chain in seen:
        config = parse_chain(chain)[0]
        assert config == METHODS.get(config.name).config_cls(), chain  # every searched parameter at its default


class ScreenedBySpeed:
    """Records the screened chains in order; a chain's time is its last link's (``slow`` 9 ms, ``fast`` 3 ms)."""

    speed = {"slow": 9.0, "fast": 3.0}

    def __init__(self):
        self.chains = []

    def evaluate(self, chain, rung):
        if chain != "original" and rung.name == SCREEN:
            self.chains.append(chain)
        return TrialResult("ok", {"cpu_ms": self.speed.get(chain.split("+")[-1], 5.0), "size_mb": 1.0},
                           Scores.of(ORIGINAL))


def test_then_float_keeping_transforms_end_with_the_fastest_export(tmp_path):
    space = Candidates(("quant", "prune"), ("fix",), ("slow", "fast"), float_keeping=frozenset({"prune", "fix"}),
                       max_transforms=2)
    ev = ScreenedBySpeed()
    Search(space, ev, settings(trials=4), tmp_path / "s.json").run()
    assert ev.chains == ["slow", "fast", "prune+fast", "prune+fix+fast"]


def test_second_stage_tries_every_transform_with_the_export_before_recoveries_and_none_after_a_student(tmp_path):
    """Shorter chains first (a budget that ends mid-stage has tried each transform once), and no recovery after a
    transform trained on the original already (a student): distilling it again towards its teacher repeats it."""
    space = Candidates(("prune", "quant", "student"), ("fix",), ("slow", "fast"),
                       float_keeping=frozenset({"prune", "fix", "student"}), max_transforms=2,
                       trained_on_original=frozenset({"student"}))
    ev = ScreenedBySpeed()
    Search(space, ev, settings(trials=12), tmp_path / "s.json").run()
    assert ev.chains[:5] == ["slow", "fast", "prune+fast", "student+fast", "prune+fix+fast"]
    assert not any(ch.startswith("student+fix") for ch in ev.chains)  # nor does the sampler compose one


def test_a_chain_that_trains_skips_the_screen_and_is_measured_at_full_once(tmp_path):
    """A student or a distillation trains for minutes on either rung, and on the screen it would train on other
    held-out examples: it is measured at the full protocol only, and the sampler learns from that run."""
    space = Candidates(("prune", "student"), ("fix",), ("slow", "fast"), float_keeping=frozenset({"prune", "fix", "student"}),
                       max_transforms=2, trained_on_original=frozenset({"student"}),
                       training=frozenset({"student", "fix"}))
    calls = []

    class Recording:
        def evaluate(self, chain, rung):
            calls.append((chain, rung.name))
            ms = 2.0 if chain.startswith("student") else ScreenedBySpeed.speed.get(chain.split("+")[-1], 10.0)
            return TrialResult("ok", {"cpu_ms": ms, "size_mb": 1.0}, Scores.of(ORIGINAL), [chain])

    outcome = Search(space, Recording(), settings(trials=8), tmp_path / "s.json").run()
    training = [(c, r) for c, r in calls if c.startswith("student") or "+fix" in c]
    assert ("student+fast", FULL) in training and ("prune+fix+fast", FULL) in training
    assert all(r == FULL for _, r in training) and len(training) == len(set(training))
    assert outcome.recommended.chain == "student+fast"
    assert "that train went to it directly" in outcome.why
    trial = next(t for t in outcome.trials if t.chain == "student+fast")
    assert trial.screen is None and trial.status == "full" and "trains" in trial.note


def test_a_chain_that_trains_is_not_started_without_budget_for_its_full_run(tmp_path):
    space = Candidates(("student",), (), ("fast",), float_keeping=frozenset({"student"}),
                       training=frozenset({"student"}))
    now = [0.0]

    class Fixed:  # a screen costs 10 s, a full run 100 s
        def evaluate(self, chain, rung):
            now[0] += 10.0 if rung.name == SCREEN else 100.0
            return TrialResult("ok", {"cpu_ms": 3.0, "size_mb": 1.0}, Scores.of(ORIGINAL), [chain])

    # both baselines (110 s), "fast" alone screened and promoted (110 s): 80 s left, less than a full run
    search = Search(space, Fixed(), settings(budget=300.0, trials=5), tmp_path / "s.json", clock=lambda: now[0])
    outcome = search.run()
    assert any("budget too small for a full trial of student+fast (it trains" in p for p in outcome.problems)
    assert "student+fast" not in [t.chain for t in outcome.trials]  # a resumed search proposes it again


def test_a_chain_that_trains_needs_as_much_budget_as_the_longest_earlier_training(tmp_path):
    """The original's full run is a poor estimate of a training chain's (90 s against 629 s on MiniLM): once one
    chain that trains was measured, another starts only with as much budget left as that one took."""
    space = Candidates(("student", "prune"), ("distill",), ("fast",), max_transforms=2,
                       float_keeping=frozenset({"student", "prune", "distill"}),
                       training=frozenset({"student", "distill"}), trained_on_original=frozenset({"student"}))
    now = [0.0]

    class Fixed:  # a screen costs 10 s, a full run 100 s, 500 s when the chain trains
        def evaluate(self, chain, rung):
            now[0] += 10.0 if rung.name == SCREEN else 500.0 if ("student" in chain or "distill" in chain) else 100.0
            return TrialResult("ok", {"cpu_ms": 3.0, "size_mb": 1.0}, Scores.of(ORIGINAL), [chain])

    # baselines 110 s, fast alone 110 s, prune+fast screened 10 s, student+fast 500 s: 730 s spent, 370 s left,
    # more than the original's full run (100 s) but less than the student's (500 s)
    search = Search(space, Fixed(), settings(budget=1100.0, trials=8), tmp_path / "s.json", clock=lambda: now[0])
    outcome = search.run()
    chains = [t.chain for t in outcome.trials]
    assert "student+fast" in chains and "prune+distill+fast" not in chains
    assert any("budget too small for a full trial of prune+distill+fast (it trains) (about 500 s needed" in p
               for p in outcome.problems), outcome.problems


def test_a_candidate_within_tolerance_on_the_screen_that_could_win_is_promoted(tmp_path):
    """Successive halving ranks the screened by speed only: when the fastest third all fail the interval at full,
    a slower candidate already within the tolerance on the screen must still get its full run when it beats the
    best fully measured one within it (else the pick stays that slower one)."""
    table = {"original": (10.0, ORIGINAL), "slowok": (9.0, flipped(0)), "fastnoisy1": (2.0, flipped(0, noisy=True)),
             "fastnoisy2": (2.5, flipped(0, noisy=True)), "fastnoisy3": (3.0, flipped(0, noisy=True)),
             "mid": (6.0, flipped(0))}
    space = Candidates((), (), ("slowok", "fastnoisy1", "fastnoisy2", "fastnoisy3", "mid"))

    class Table:
        def evaluate(self, chain, rung):
            ms, correct = table[chain]
            return TrialResult("ok", {"cpu_ms": ms, "size_mb": 1.0},
                               Scores.of(correct[:rung.overrides.get("limit", N)]), [chain])

    three = Settings(("cpu_ms",), parse_tolerance("1pt"), 3600.0, 5, Rung(SCREEN, {"limit": SCREEN_N}), Rung(FULL),
                     eta=3, seed=3)
    outcome = Search(space, Table(), three, tmp_path / "s.json").run()
    by_chain = {t.chain: t for t in outcome.trials}
    assert by_chain["mid"].screen.within and by_chain["mid"].full is not None  # promoted though not in the top third
    assert by_chain["fastnoisy2"].full is None and by_chain["fastnoisy3"].full is None  # neither within nor fastest
    assert outcome.recommended.chain == "mid"


def test_a_state_from_before_a_new_optional_protocol_field_resumes(tmp_path):
    """A protocol field added later and left at None (--calibration-dataset) does not make an older state "another
    search"; a value given for it does."""
    from squeezebench.search.state import State

    path = tmp_path / "search.json"
    old = {"model": "m", "protocol": {"threads": 1, "limit": 40}}
    State.load(path, old).save(path)
    State.load(path, {"model": "m", "protocol": {"threads": 1, "limit": 40, "calibration_dataset": None}})
    with pytest.raises(SqueezebenchError, match="other settings \\(protocol\\)"):
        State.load(path, {"model": "m", "protocol": {"threads": 1, "limit": 40, "calibration_dataset": "csv:x"}})


def test_retry_failed_measures_failed_trials_again_on_resume(tmp_path):
    """A trial that failed (a missing dependency, a broken build) stays failed on a plain resume and is measured
    again with retry_failed; the outcome then counts it."""
    class Broken(FakeEvaluator):
        def evaluate(self, chain, rung):
            if "quant" in chain:
                self.calls.append((chain, rung.name))
                return TrialResult("failed: ImportError: no module named quantlib")
            return super().evaluate(chain, rung)

    path = tmp_path / "search.json"
    first = Search(CANDIDATES, Broken(), settings(), path).run()
    failed = sorted(t.chain for t in first.trials if t.status == "failed")
    assert failed and all("quant" in c for c in failed) and first.recommended.chain != "quant+export"
    plain = FakeEvaluator()
    Search(CANDIDATES, plain, settings(), path).run()  # trial budget reached: nothing is measured again
    assert [c for c, _ in plain.calls if c != "original"] == []
    again = FakeEvaluator()
    outcome = Search(CANDIDATES, again, settings(), path, retry_failed=True).run()
    assert sorted({c for c, _ in again.calls if c != "original"}) == failed
    assert not any(t.status == "failed" for t in outcome.trials)
    assert outcome.recommended.chain == "quant+export"


def test_retry_failed_also_retries_a_failed_full_rung(tmp_path):
    class FullBroken(FakeEvaluator):
        def evaluate(self, chain, rung):
            if chain == "quant+export" and rung.name == FULL:
                self.calls.append((chain, rung.name))
                return TrialResult("failed: the full run was killed")
            return super().evaluate(chain, rung)

    path = tmp_path / "search.json"
    first = Search(CANDIDATES, FullBroken(), settings(), path).run()
    assert any(t.chain == "quant+export" and t.full is not None and t.full.status != "ok" for t in first.trials)
    assert first.recommended is None or first.recommended.chain != "quant+export"
    again = FakeEvaluator()
    outcome = Search(CANDIDATES, again, settings(), path, retry_failed=True).run()
    assert ("quant+export", FULL) in again.calls and outcome.recommended.chain == "quant+export"
