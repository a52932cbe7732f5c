"""``squeezebench search``: candidates from the registry, the runner as the trial evaluator, the outcome in words
(the recommended variant and why, the front); cli.py passes the printer (``say``)."""

from __future__ import annotations

import dataclasses
from typing import Callable

from squeezebench import outdir
from squeezebench.report.html import write_report
from squeezebench.search.candidates import build_candidates, check_not_empty, method_reasons
from squeezebench.search.strategy import FULL, SCREEN, Outcome, QualityText, Search, Settings, parse_budget
from squeezebench.search.tolerance import parse_tolerance
from squeezebench.search.trials import Rung, RunnerEvaluator, out_path


def screen_rung(protocol, limit: int, min_iters: int, min_time_s: float) -> Rung:
    """The screening rung: at most ``limit`` examples, shorter timing (never more than the full protocol's)."""
    full_limit = protocol.limit
    return Rung(SCREEN, {"limit": min(limit, full_limit) if full_limit else limit,
                         "min_iters": min(min_iters, protocol.min_iters),
                         "min_time_s": min(min_time_s, protocol.min_time_s)})


def quality_text(task_name: str) -> QualityText:
    """The task's primary metric in its table form: values as the table writes them (WER in %), drops in points of
    a fraction ("pt", accuracy) or percentage points ("pp", error rates in %), else in the metric's own unit."""
    from squeezebench.measures.quality import METRICS
    from squeezebench.tasks import TASKS

    name = TASKS.get(task_name).primary_metric
    if name not in METRICS:
        return QualityText()
    form = METRICS.get(name)
    if form.delta in ("pt", "pp"):
        return QualityText(form.scale, form.decimals, form.suffix, 100.0, 2, f" {form.delta}")
    return QualityText(form.scale, form.decimals, form.suffix, form.scale, form.decimals, form.suffix)


def run_search(args, config, say: Callable[[str], None]) -> int:
    from squeezebench.runner import validate

    objectives = tuple(dict.fromkeys([args.objective, *args.also]))
    settings = Settings(objectives, parse_tolerance(args.max_drop), parse_budget(args.budget), args.trials,
                        screen_rung(config.protocol, args.screen_limit, args.screen_min_iters, args.screen_min_time),
                        Rung(FULL), args.eta, args.seed)
    validate(dataclasses.replace(config))  # model, data, protocol: one-line errors before any model is loaded
    device = config.devices[0]
    reasons = method_reasons(args.model, args.task, device)
    candidates = build_candidates(reasons, args.include, args.exclude, args.max_transforms)
    check_not_empty(candidates, args.model, args.task, device)
    say(f"search: {len(candidates.transforms) + len(candidates.followers)} transforms, {len(candidates.exports)} "
        f"exports/runtimes apply to {args.model} on {device}; budget {settings.budget_s:.0f} s, "
        f"{settings.max_trials} trials at most")
    config.out.mkdir(parents=True, exist_ok=True)
    state = outdir.inside(config.out, out_path(config.out), "the search state")
    key = {"model": args.model, "task": args.task, "dataset": config.dataset, "device": device, "team": config.team,
           "protocol": config.protocol.to_dict(), "max_transforms": args.max_transforms,
           "include": args.include, "exclude": args.exclude}
    search = Search(candidates, RunnerEvaluator(config, objectives), settings, state, key, say=say,
                    text=quality_text(args.task), retry_failed=args.retry_failed)
    outcome = search.run()
    lines = describe(outcome, objectives)
    for line in lines:
        say(line)
    report = outdir.inside(config.out, config.out / "search-report.html", "the search report")
    write_report([config.out / config.team], report, preface=preface(lines))
    say(f"state: {state}; report with the front: {report}; every trial is a record: "
        f"squeezebench table {config.out / config.team}")
    return 0 if outcome.recommended is not None else 1


def preface(lines: list[str]) -> str:
    """The outcome's lines as the report's first section (the plots below show each rung's front of records)."""
    from squeezebench.report.escape import html_text

    text = [f"<p>{html_text(line)}</p>" for line in lines if not line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")
            and not line.startswith("|---")]
    table = ""
    if rows:
        head = "".join(f"<th>{html_text(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<section class="search"><h2>Search</h2>{"".join(text)}{table}</section>'


def describe(outcome: Outcome, objectives: tuple[str, ...]) -> list[str]:
    """The problems (one line each), the recommendation and why, and the front as a small table."""
    lines = [f"note: {p}" for p in outcome.problems]
    lines.append(("recommended: " if outcome.recommended is not None else "no recommendation: ") + outcome.why)
    if outcome.front:
        lines.append("front (full protocol, within tolerance by the paired interval):")
        lines.append("| variant | " + " | ".join(objectives) + " | quality | drop [95 % paired] |")
        lines.append("|---" * (len(objectives) + 3) + "|")
        rows = ([("original", outcome.baseline)] if outcome.baseline is not None else []) + \
            [(t.chain, t.full) for t in outcome.front]
        for name, r in rows:
            text = outcome.text
            drop = "—" if r.drop is None else f"{text.drop(r.drop)} [{text.drop(r.low)}, {text.drop(r.high)}]"
            lines.append(f"| {name} | " + " | ".join(f"{r.objectives.get(o, float('nan')):.4g}" for o in objectives)
                         + f" | {text.value(r.quality)} | {drop} |")
    return lines
