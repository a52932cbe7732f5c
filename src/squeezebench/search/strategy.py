"""The search loop: a sampler (Optuna TPE for one objective, NSGA-II for several) proposes chains, after two enqueued
stages: each export or runtime alone at its defaults, then each float-keeping transform (alone and with its recovery
follower) ending with the export that screened fastest; every proposal is
first measured on the screening rung (a subset of the examples, short timing); only a plausible one (its paired
interval reaches below the tolerance) that ranks in the best 1/eta of the screened so far (asynchronous successive
halving) is promoted to the full protocol, where "within tolerance" is decided by the whole paired interval."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.search.candidates import NONE, Candidates, Param, chain_text
from squeezebench.search.state import RungResult, State, Trial
from squeezebench.search.tolerance import Scores, Tolerance, judge
from squeezebench.search.trials import Evaluator, Rung, TrialResult

log = logging.getLogger(__name__)

SCREEN, FULL = "screen", "full"
REPEATS_BEFORE_RANDOM = 5


def parse_budget(text: str) -> float:
    """'30m', '2h', '90s' or a number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise SqueezebenchError(f"--budget {text!r}: write a duration such as 30m, 2h or 600s")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class Settings:
    objectives: tuple[str, ...]  # minimised, the first one decides the recommendation
    tolerance: Tolerance
    budget_s: float
    max_trials: int = 30
    screen: Rung = Rung(SCREEN)
    full: Rung = Rung(FULL)
    eta: int = 3  # promote the best 1/eta of the screened
    seed: int = 0

    def key(self) -> dict[str, Any]:
        """What a resumed search must share with the state it resumes."""
        return {"objectives": list(self.objectives), "max_drop": self.tolerance.text,
                "screen": self.screen.overrides, "full": self.full.overrides, "eta": self.eta, "seed": self.seed}


@dataclass(frozen=True)
class QualityText:
    """How the outcome's lines write the metric and its drop: the metric's display form (command.py builds it from
    the task's registered metric: WER 0.4406 -> "44.06 %", a drop of 0.02 -> "+2.00 pp"); plain 4-decimal numbers
    by default (a fake evaluator's metric)."""

    scale: float = 1.0
    decimals: int = 4
    suffix: str = ""
    drop_scale: float = 1.0
    drop_decimals: int = 4
    drop_suffix: str = ""

    def value(self, v: float) -> str:
        return f"{v * self.scale:.{self.decimals}f}{self.suffix}"

    def drop(self, d: float, sign: bool = True) -> str:
        return f"{d * self.drop_scale:{'+' if sign else ''}.{self.drop_decimals}f}{self.drop_suffix}"

    def verdict(self, r: "RungResult") -> str:
        return (f"drop {self.drop(r.drop)}, interval [{self.drop(r.low)}, {self.drop(r.high)}], allowed "
                f"{self.drop(r.allowed, sign=False)}")


@dataclass
class Outcome:
    recommended: Optional[Trial]
    front: list[Trial]
    baseline: Optional[RungResult]
    why: str
    problems: list[str] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    text: QualityText = QualityText()


class Search:
    def __init__(self, candidates: Candidates, evaluator: Evaluator, settings: Settings, state_path: Path,
                 extra_key: Optional[dict[str, Any]] = None, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = log.info, text: QualityText = QualityText(), retry_failed: bool = False):
        self.candidates, self.evaluator, self.settings, self.text = candidates, evaluator, settings, text
        self.retry_failed = retry_failed  # on resume, trials whose screening failed are measured again
        self.state_path, self.clock, self.say = Path(state_path), clock, say
        self.state = State.load(self.state_path, {**settings.key(), **(extra_key or {})})
        self.problems: list[str] = []
        self._baseline: dict[str, Scores] = {}

    # --- time -------------------------------------------------------------------------------------------------
    def _spent(self) -> float:
        return self.state.elapsed_s + (self.clock() - self._t0)

    def _left(self) -> float:
        return self.settings.budget_s - self._spent()

    def _save(self) -> None:
        now = self.clock()
        self.state.elapsed_s += now - self._t0
        self._t0 = now
        self.state.save(self.state_path)

    # --- one measurement ----------------------------------------------------------------------------------------
    def _measure(self, chain: str, rung: Rung) -> tuple[RungResult, TrialResult]:
        t = self.clock()
        res = self.evaluator.evaluate(chain, rung)
        seconds = self.clock() - t
        if not res.ok:
            return RungResult(res.status, record_keys=res.record_keys, seconds=seconds), res
        out = RungResult("ok", res.objectives, res.quality.value, record_keys=res.record_keys, seconds=seconds)
        if chain != "original":
            v = judge(res.quality, self._baseline[rung.name], self.settings.tolerance)
            out.drop, out.low, out.high, out.allowed = v.drop, v.low, v.high, v.allowed
            out.within, out.plausible = v.within, v.plausible
        return out, res

    def _measure_baseline(self, rung: Rung) -> None:
        known = self.state.baseline.get(rung.name)
        result, raw = self._measure("original", rung)  # a runner resumes it from its record when it exists
        if not raw.ok:
            raise SqueezebenchError(f"the original could not be measured on the {rung.name} rung ({raw.status}); "
                                    "nothing can be compared with it")
        self._baseline[rung.name] = raw.quality
        if known is not None:
            result.seconds = known.seconds  # the cost of measuring it, not of resuming it
        self.state.baseline[rung.name] = result
        self._save()

    # --- the sampler ------------------------------------------------------------------------------------------
    def _study(self):
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # constraints_func
        k = len(self.settings.objectives)
        constraints = _constraints
        if k == 1:
            sampler = optuna.samplers.TPESampler(seed=self.settings.seed, constraints_func=constraints,
                                                 n_startup_trials=5)
        else:
            sampler = optuna.samplers.NSGAIISampler(seed=self.settings.seed, constraints_func=constraints,
                                                    population_size=8)
        study = optuna.create_study(directions=["minimize"] * k, sampler=sampler)
        for trial in self.state.trials:  # the sampler's history, replayed from the state
            if trial.status != "running":
                study.add_trial(self._frozen(trial))
        return study

    def _frozen(self, trial: Trial):
        import optuna
        from optuna.distributions import json_to_distribution
        from optuna.samplers._base import _CONSTRAINTS_KEY
        from optuna.trial import TrialState

        dists = {k: json_to_distribution(v) for k, v in trial.distributions.items()}
        s = _learned(trial)
        if s is None or s.status != "ok":
            return optuna.trial.create_trial(state=TrialState.FAIL, params=trial.params, distributions=dists)
        values = [s.objectives[o] for o in self.settings.objectives]
        violation = [s.low - s.allowed]
        return optuna.trial.create_trial(params=trial.params, distributions=dists, values=values,
                                         system_attrs={_CONSTRAINTS_KEY: violation},
                                         user_attrs={"constraint": violation})

    def _suggest(self, trial) -> list[tuple[str, dict[str, Any]]]:
        """A chain: up to max_transforms transforms (a follower such as distill only after one; nothing but a runtime
        choice after a quantizer), then an export."""
        c = self.candidates
        links: list[tuple[str, dict[str, Any]]] = []
        for i in range(c.max_transforms):
            if not c.keeps_float([n for n, _ in links]):
                break
            choices = (NONE,) + c.transforms + (c.followers if links else ())
            name = trial.suggest_categorical(f"transform{i}", choices)
            if name == NONE:
                break
            if any(n == name for n, _ in links):
                continue
            if name in c.followers and not c.recovery_after([n for n, _ in links]):
                break  # (the same chain without it: a repeat the loop counts as one)
            links.append((name, self._values(trial, name)))
        last = c.last_links([n for n, _ in links])
        # one distribution per set of choices (Optuna needs a fixed one per name)
        export_name = "export" if last == c.exports else "runtime"
        export = trial.suggest_categorical(export_name, (NONE,) + last) if last else NONE
        if export != NONE:
            links.append((export, self._values(trial, export)))
        return links

    def _link_names(self, trial: Trial) -> list[str]:
        """The transforms of the trial's chain, by name (its export is never one that trains)."""
        names = (trial.params.get(f"transform{i}") for i in range(self.candidates.max_transforms))
        return [n for n in names if n not in (None, NONE)]

    def _values(self, trial, method: str) -> dict[str, Any]:
        return {p.name: _suggest_param(trial, f"{method}.{p.name}", p) for p in self.candidates.params.get(method, ())}

    # --- promotion ------------------------------------------------------------------------------------------------
    def _promote(self, trial: Trial) -> bool:
        """Plausible on the screen, and among the best 1/eta of the plausible screened trials so far (on the first
        objective; or, with several, not dominated by any of them); or within the tolerance already on the screen
        and better on the first objective than every fully measured candidate within it (it could become the
        recommendation: on the 30-minute MiniLM search, openvino-int8-weights screened within 1 pt at 14.3 ms but
        was not among the fastest third, whose members all failed the interval at full, so the pick stayed a
        34.2-ms variant)."""
        s = trial.screen
        if s is None or s.status != "ok" or not s.plausible:
            return False
        peers = [t.screen for t in self.state.trials if t.screen is not None and t.screen.status == "ok"
                 and t.screen.plausible]
        objs = self.settings.objectives
        if len(objs) > 1 and not any(_dominates(p.objectives, s.objectives, objs) for p in peers):
            return True
        if s.within:
            best_within = min((t.full.objectives[objs[0]] for t in self.state.trials if t is not trial
                               and t.full is not None and t.full.status == "ok" and t.full.within), default=math.inf)
            if s.objectives[objs[0]] < best_within:
                return True
        ranked = sorted(p.objectives[objs[0]] for p in peers)
        cut = ranked[max(1, math.ceil(len(ranked) / self.settings.eta)) - 1]
        return s.objectives[objs[0]] <= cut

    def _enqueue_exports_alone(self, study) -> None:
        """Each export or runtime alone is tried first (not yet tried ones, on a resumed search): they are the
        cheapest chains and the usual winners, and the sampler then knows them before it composes chains; with a
        dozen exports and a dozen transforms, random start-up proposals would rarely pick one alone."""
        c = self.candidates
        tried = {t.params.get("export") for t in self.state.trials if t.params.get("transform0") == NONE}
        for name in c.exports:
            if name not in tried:  # at its defaults: what a team would try first
                defaults = {f"{name}.{p.name}": v for p, v in self._defaults(name)}
                study.enqueue_trial({"transform0": NONE, "export": name, **defaults}, skip_if_exists=True)

    def _alone(self) -> dict[str, Trial]:
        """The trials of an export or runtime alone, by its name."""
        return {t.params["export"]: t for t in self.state.trials
                if t.params.get("transform0") == NONE and t.params.get("export") not in (None, NONE)}

    def _exports_alone_done(self) -> bool:
        alone = self._alone()
        return all(name in alone and alone[name].status != "running" for name in self.candidates.exports)

    def _enqueue_with_best_export(self, study) -> None:
        """Second stage: each transform that keeps float layers (structured pruning, a student...) at its defaults,
        alone and followed by its recovery (distill; not after a student, trained on the original already), ending
        with the export that screened fastest within reach of the tolerance: the chains a team composes by hand, so
        the sampler starts from them rather than hoping to draw them among thousands. Shorter chains first (each
        transform with the export, then with its recovery too), as the exports alone come before any chain: a
        budget that ends mid-stage has tried one chain of every transform."""
        c, objective = self.candidates, self.settings.objectives[0]
        ranked = sorted((t.screen.objectives[objective], name) for name, t in self._alone().items()
                        if t.screen is not None and t.screen.status == "ok" and t.screen.plausible)
        if not ranked:
            return
        best = ranked[0][1]
        ending = {"export": best, **{f"{best}.{p.name}": v for p, v in self._defaults(best)}}
        firsts = [(name, {"transform0": name, **{f"{name}.{p.name}": v for p, v in self._defaults(name)}})
                  for name in c.transforms if name in c.float_keeping]
        for _, first in firsts:
            study.enqueue_trial({**first, **({"transform1": NONE} if c.max_transforms > 1 else {}), **ending},
                                skip_if_exists=True)
        if c.max_transforms < 2:
            return
        for name, first in firsts:
            if not c.recovery_after([name]):
                continue
            for follower in c.followers:
                follow = {f"{follower}.{p.name}": v for p, v in self._defaults(follower)}
                study.enqueue_trial({**first, "transform1": follower, **follow, **ending}, skip_if_exists=True)

    def _defaults(self, method: str) -> list[tuple[Param, Any]]:
        """The searched parameters of ``method`` at their config's defaults (those inside the searched range)."""
        from squeezebench.methods import METHODS

        try:
            config = METHODS.get(method).config_cls()
        except (SqueezebenchError, TypeError, ValueError):  # a fake or a config without defaults: sampled
            return []
        out = []
        for p in self.candidates.params.get(method, ()):
            v = getattr(config, p.name, None)
            if p.kind == "choice" and v in p.choices or p.kind != "choice" and v is not None and p.low <= v <= p.high:
                out.append((p, v))
        return out

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        self._t0 = self.clock()
        st = self.settings
        self._measure_baseline(st.screen)
        self._measure_baseline(st.full)
        if self._left() <= 0:
            if self.state.trials:  # a resumed search whose budget its earlier trials spent
                self.problems.append(f"the budget ({st.budget_s:.0f} s) was spent by the {len(self.state.trials)} "
                                     "trials of this state; nothing new ran (pass a larger --budget to go on)")
            else:
                self.problems.append(f"the budget ({st.budget_s:.0f} s) was spent measuring the original; no trial "
                                     "ran")
            return self.outcome()
        if self.retry_failed:  # e.g. a dependency installed since, or a broken build fixed: measured again first
            for trial in [t for t in self.state.trials
                          if t.status == "failed" or (t.full is not None and t.full.status != "ok")]:
                why = trial.note or (trial.full.status if trial.full is not None else "")
                self.say(f"trial {trial.number}: {trial.chain} failed before ({why[:120]}); measured again")
                # (a screen that succeeded is resumed from its record by the runner, not measured again)
                trial.status, trial.screen, trial.full, trial.note = "running", None, None, ""
            self._save()
        study = self._study()
        for trial in [t for t in self.state.trials if t.status == "running"]:  # killed mid-trial: measure it again
            self.say(f"trial {trial.number}: {trial.chain} (resumed)")
            self._finish(trial)
            study.add_trial(self._frozen(trial))
        seen = {t.chain: t for t in self.state.trials}
        self._enqueue_exports_alone(study)
        sampler, repeats, staged = study.sampler, 0, False
        while len(self.state.trials) < st.max_trials and self._left() > 0:
            if not staged and self._exports_alone_done():
                staged = True
                self._enqueue_with_best_export(study)
            # a sampler that keeps proposing what was measured (TPE on a small categorical space) gets one random
            # proposal in between, so the space is explored before the search gives up on it
            study.sampler = _random(st.seed + len(study.trials)) if repeats >= REPEATS_BEFORE_RANDOM else sampler
            ot = study.ask()
            chain = chain_text(self._suggest(ot))  # parameters are sampled here, by the sampler set above
            study.sampler = sampler
            if chain == "original" or chain in seen:  # nothing new: the sampler learns what it already knows
                repeats += 1
                prior = _learned(seen[chain]) if chain in seen else None
                if prior is not None and prior.status == "ok":
                    ot.set_user_attr("constraint", [prior.low - prior.allowed])
                    study.tell(ot, [prior.objectives[o] for o in st.objectives])
                else:
                    study.tell(ot, state=_fail())
                if _stalled(study, len(self.state.trials)):
                    self.say("the sampler proposes only chains already measured: the space is exhausted")
                    break
                continue
            repeats = 0
            trial = Trial(len(self.state.trials), chain, dict(ot.params),
                          {k: _dist_json(d) for k, d in ot.distributions.items()})
            self.state.trials.append(trial)
            seen[chain] = trial
            self._save()
            self.say(f"trial {trial.number}: {chain}")
            stop = self._finish(trial)
            s = _learned(trial)
            if s is not None and s.status == "ok":
                ot.set_user_attr("constraint", [s.low - s.allowed])  # <= 0: feasible (read by _constraints)
                study.tell(ot, [s.objectives[o] for o in st.objectives])
            else:
                study.tell(ot, state=_fail())
            if stop:
                break
        if len(self.state.trials) >= st.max_trials:
            self.say(f"trial budget reached ({st.max_trials} trials)")
        return self.outcome()

    def _finish(self, trial: Trial) -> bool:
        """Screen the trial, promote it when it earns it; True when the time budget cannot pay for its full run. A
        chain that trains (distill, a student) goes to the full protocol directly: its training dominates either
        rung's cost, and a screen would train it again on other held-out examples (measured on MiniLM at 2,000
        articles: a student's screen took 391 s and its full run 374 s more)."""
        if self.candidates.trains(self._link_names(trial)):
            stop = not self._can_afford_full(trial.chain + " (it trains)", trains=True)
            if stop:
                self.state.trials.remove(trial)  # not measured: a resumed search with more budget proposes it again
            else:
                trial.full, _ = self._measure(trial.chain, self.settings.full)
                trial.status = "full" if trial.full.status == "ok" else "failed"
                trial.note = ("measured at the full protocol only: it trains" if trial.full.status == "ok"
                              else trial.full.status)
            self._save()
            return stop
        trial.screen, _ = self._measure(trial.chain, self.settings.screen)
        trial.status = "screened" if trial.screen.status == "ok" else "failed"
        trial.note = "" if trial.screen.status == "ok" else trial.screen.status
        stop = False
        if trial.status == "screened" and self._promote(trial):
            if not self._can_afford_full(trial.chain):
                stop = True
            else:
                trial.full, _ = self._measure(trial.chain, self.settings.full)
                trial.status = "full"
        self._save()
        return stop

    def _can_afford_full(self, what: str, trains: bool = False) -> bool:
        """The budget left pays for a full run (as long as the original's took; for a chain that trains, as long as
        the longest earlier one that trained, whose training dominated it: on MiniLM at 2,000 articles the original's
        full run took about 90 s, a distillation's 629 s); if not, says so in the outcome."""
        need = self.state.baseline[FULL].seconds
        if trains:
            need = max([need] + [t.full.seconds for t in self.state.trials if t.full is not None
                                 and t.full.status == "ok" and self.candidates.trains(self._link_names(t))])
        if self._left() >= need:
            return True
        self.problems.append(f"budget too small for a full trial of {what} (about {need:.0f} s needed, "
                             f"{max(self._left(), 0):.0f} s left); the best found so far is kept")
        return False

    # --- the answer -------------------------------------------------------------------------------------------
    def outcome(self) -> Outcome:
        objs = self.settings.objectives
        base = self.state.baseline.get(FULL)
        full = [t for t in self.state.trials if t.full is not None and t.full.status == "ok"]
        within = [t for t in full if t.full.within]
        front = pareto_trials(within, objs, base)
        problems = list(self.problems)
        tol = self.settings.tolerance.text
        if not self.candidates.transforms and not self.candidates.exports:
            problems.append("the candidate set is empty: no method applies")
        if not full and not any("budget" in p for p in problems):
            screened = [t for t in self.state.trials if t.status == "screened"]
            problems.append("no trial reached the full protocol" + (
                f" ({len(screened)} screened, none plausible within {tol})" if screened else ""))
        elif full and not within:
            closest = min(full, key=lambda t: t.full.high)
            problems.append(f"no candidate meets --max-drop {tol} by its paired interval; the closest is "
                            f"{closest.chain} ({self.text.verdict(closest.full)})")
        faster = [t for t in within if base is None or t.full.objectives[objs[0]] < base.objectives.get(objs[0], math.inf)]
        if not faster:
            why = ("no searched variant within the tolerance is faster than the original on "
                   f"{objs[0]}; keep the original")
            if problems:
                why = problems[-1] + "; " + why
            return Outcome(None, front, base, why, problems, list(self.state.trials), self.text)
        best = min(faster, key=lambda t: t.full.objectives[objs[0]])
        return Outcome(best, front, base, self._why(best, base, full, within), problems, list(self.state.trials),
                       self.text)

    def _why(self, best: Trial, base: Optional[RungResult], full: list[Trial], within: list[Trial]) -> str:
        objs, o = self.settings.objectives, self.settings.objectives[0]
        f = best.full
        ratio = f" ({base.objectives[o] / f.objectives[o]:.2f}x the original's {base.objectives[o]:.4g})" \
            if base is not None and f.objectives.get(o) else ""
        others = "".join(f", {k} {f.objectives[k]:.4g}" for k in objs[1:])
        n_screened = sum(1 for t in self.state.trials if t.screen is not None and t.screen.status == "ok")
        n_direct = sum(1 for t in full if t.screen is None)
        return (f"{best.chain} is recommended: {o} {f.objectives[o]:.4g}{ratio}{others}, the lowest {o} of the "
                f"{len(within)} of {len(full)} fully measured candidates whose paired 95 % interval of the quality "
                f"drop stays within --max-drop {self.settings.tolerance.text} ({self.text.verdict(f)}); "
                f"{len(self.state.trials)} trials were proposed, {n_screened} screened on the subset and "
                f"{len(full) - n_direct} promoted to the full protocol by successive halving"
                + (f"; {n_direct} that train went to it directly." if n_direct else "."))


def _learned(trial: Trial) -> Optional[RungResult]:
    """What the sampler learns from a trial: its screen, or its full run when it skipped the screen (it trains)."""
    return trial.screen if trial.screen is not None else trial.full


def _dominates(a: dict[str, float], b: dict[str, float], objs: tuple[str, ...]) -> bool:
    return all(a[o] <= b[o] for o in objs) and any(a[o] < b[o] for o in objs)


def pareto_trials(trials: list[Trial], objs: tuple[str, ...], baseline: Optional[RungResult] = None) -> list[Trial]:
    """The full trials on (objectives..., quality drop) that no other one, nor the original (drop 0), dominates;
    sorted by the first objective."""
    def point(r: RungResult) -> dict[str, float]:
        return {**r.objectives, "_drop": r.drop or 0.0}

    keys = objs + ("_drop",)
    others = [t.full for t in trials] + ([baseline] if baseline is not None and baseline.status == "ok" else [])
    front = [t for t in trials if not any(_dominates(point(u), point(t.full), keys) for u in others if u is not t.full)]
    return sorted(front, key=lambda t: t.full.objectives[objs[0]])


def _constraints(frozen) -> list[float]:
    return list(frozen.user_attrs.get("constraint", [0.0]))


def _fail():
    from optuna.trial import TrialState

    return TrialState.FAIL


def _random(seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _dist_json(dist) -> str:
    from optuna.distributions import distribution_to_json

    return distribution_to_json(dist)


def _stalled(study, proposed: int) -> bool:
    """The sampler keeps proposing what was measured: the space is exhausted (many more asks than new trials)."""
    return len(study.trials) > 100 + 10 * proposed


def _suggest_param(trial, name: str, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(name, p.choices)
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step)
