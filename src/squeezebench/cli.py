"""Command line: ``squeezebench run | search | demo | table | import-table | report | serve | loadtest | methods | tasks |
measures``."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Optional

from squeezebench.errors import SqueezebenchError

DEMO_MODEL = "offline:all-minilm-l6-v2"
DEMO_LIMIT = 300


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    from squeezebench.protocol import add_arguments

    add_arguments(p)  # one option per protocol field (timing, evaluation, calibration)
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    p.add_argument("--team", default="local", help="team name recorded with every result")
    p.add_argument("--force", action="store_true", help="measure again variants already in --out")
    p.add_argument("--timeout", type=_positive_int, default=3600, help="seconds per subprocess before it is killed")


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="the variant to serve, as it appears in the table")
    p.add_argument("--model", help="the model's name, when the folder holds several with this method")
    p.add_argument("--team", help="the team, when the folder holds several with this method")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=_positive_int, help="torch threads of the model (default: as it was measured)")
    p.add_argument("--max-batch", type=_positive_int, default=1, help="dynamic batching: requests per batch at most "
                   "(default 1: no batching)")
    p.add_argument("--batch-window-ms", type=float, default=0.0,
                   help="dynamic batching: how long the first request of a batch waits for others (default 0)")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    """The data, model-loading, measurement and executor options `run` and `search` share."""
    p.add_argument("--dataset", help="bbc-news, bbc-headlines, csv:PATH, jsonl:PATH, text-dir:PATH, image-dir:PATH, "
                   "imagenet-sample:PATH, conll:PATH, hf:NAME[:SPLIT] (default: the task's)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--input-column", help="text-generation input column of csv:/jsonl: (default: --text-column)")
    p.add_argument("--target-column", help="text-generation reference column of csv:/jsonl:")
    p.add_argument("--audio-column", default="audio", help="csv/jsonl column of audio file paths (speech-recognition)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code")
    p.add_argument("--tokenizer", help="tokenizer of an onnx:FILE model: directory, Hugging Face id or offline:NAME "
                   "(default: tokenizer files beside the .onnx file)")
    _add_measure_args(p)
    p.add_argument("--executor", default="local", help="where builds and measurements run: local (this machine, "
                   "one after another; default) or ray (a Ray cluster; pip install 'squeezebench[ray]')")
    p.add_argument("--ray-address", help="Ray cluster to join (host:port, or auto for the one started on this "
                   "machine with `ray start`; default $RAY_ADDRESS, else a private Ray on this machine)")
    p.add_argument("--artifact-dir", help="with --executor ray: a folder every node mounts at this same absolute "
                   "path, through which builds reach measurements (default: Ray's object store)")
    p.add_argument("--ray-resources", metavar="JSON", help="with --executor ray: custom Ray resources per device, "
                   "method, METHOD@DEVICE or 'build', e.g. '{\"cpu\": {\"node_type_a\": 0.01}}'")


def _add_search_args(p: argparse.ArgumentParser) -> None:
    from squeezebench.search.trials import OBJECTIVES

    p.add_argument("--model", required=True, help="the model to compress (as for `run --model`)")
    p.add_argument("--task", required=True, help="see `squeezebench tasks`")
    p.add_argument("--max-drop", required=True, help="largest quality drop accepted, judged by the paired 95 %% "
                   "interval of the difference to the original: 1pt (points of a fraction), 2%% (relative) or an "
                   "amount in the metric's unit")
    p.add_argument("--objective", default="cpu_ms", choices=OBJECTIVES, help="what to minimise (default cpu_ms)")
    p.add_argument("--also", nargs="+", default=[], choices=OBJECTIVES,
                   help="further objectives: the search returns their Pareto front (NSGA-II)")
    p.add_argument("--budget", default="30m", help="wall time of the whole search, e.g. 30m, 2h (default 30m)")
    p.add_argument("--retry-failed", action="store_true", help="on resume, measure again the trials that failed "
                   "(e.g. after installing what they lacked); they count against the budget again")
    p.add_argument("--trials", type=_positive_int, default=30, help="candidates proposed at most (default 30)")
    p.add_argument("--screen-limit", type=_positive_int, default=200,
                   help="examples of the screening rung (successive halving; default 200)")
    p.add_argument("--screen-min-iters", type=_positive_int, default=5, help="timed iterations when screening")
    p.add_argument("--screen-min-time", type=float, default=0.5, help="timed seconds when screening")
    p.add_argument("--eta", type=_positive_int, default=3, help="promote the best 1/ETA of the screened (default 3)")
    p.add_argument("--max-transforms", type=_positive_int, default=1,
                   help="transforms per chain at most, before an optional export (default 1)")
    p.add_argument("--include", nargs="+", help="search only these methods")
    p.add_argument("--exclude", nargs="+", default=[], help="never try these methods")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezebench", description="What did each compression method really buy, "
                                     "and what did it cost? Honest size, speed, memory and quality, in one table.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: it registers its own tasks, measures, methods or runtimes "
                        "(repeatable; also $SQUEEZEBENCH_PLUGINS)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="measure a model and its compressed variants")
    run.add_argument("--model", action="append", required=True,
                     help="Hugging Face id or directory, gguf:FILE, onnx:FILE, python:pkg.module:function, offline:NAME "
                     "(repeatable)")
    run.add_argument("--task", required=True, help="see `squeezebench tasks`")
    run.add_argument("--methods", nargs="+", default=["original"],
                     help="methods or chains, e.g. original fp16 int4-weight-only:group_size=64 a+b")
    _add_source_args(run)

    search = sub.add_parser("search", help="find the best variant within a quality tolerance: a sampler proposes "
                            "chains, successive halving screens them, every trial is an ordinary record")
    _add_search_args(search)
    _add_source_args(search)

    demo = sub.add_parser("demo", help="offline demo: all-MiniLM-L6-v2 on BBC News, original/fp16/bf16")
    _add_measure_args(demo)

    tab = sub.add_parser("table", help="merge result folders of one or many teams into one table")
    tab.add_argument("dirs", nargs="+", type=Path)
    tab.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    tab.add_argument("--lang", choices=["en", "ru"], default="en")
    tab.add_argument("--update", type=Path, help="merge into this README: its squeezebench:table block if it has one, "
                     "else the table with the course's header (only these results' rows are replaced or added)")
    tab.add_argument("--block", default="", help="name of the block to rewrite, for READMEs with several tables")
    tab.add_argument("--dry-run", action="store_true", help="with --update: print the unified diff, write nothing")
    tab.add_argument("--extra-columns", action="store_true",
                     help="also show the columns of measures outside the course's table (e.g. a plug-in's)")

    imp = sub.add_parser("import-table", help="import the hand-written rows of a README's course table as records "
                         "marked 'imported, not measured by squeezebench'")
    imp.add_argument("readme", type=Path)
    imp.add_argument("--team", required=True, help="team recorded with the imported rows")
    imp.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    imp.add_argument("--task", default="unknown", help="task the rows were measured on, when known")
    imp.add_argument("--only", help="import only the rows whose line contains this text")

    rep = sub.add_parser("report", help="one self-contained HTML file: sortable table, Pareto plots, protocols")
    rep.add_argument("dirs", nargs="+", type=Path)
    rep.add_argument("-o", "--output", type=Path, default=Path("report.html"))

    serve = sub.add_parser("serve", help="serve one measured variant over HTTP (POST /predict, GET /health, /ready)")
    serve.add_argument("results", type=Path, help="results folder of `squeezebench run` (its --out)")
    _add_serve_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    serve.add_argument("--warmup-body", type=Path, help="a JSON file with the request of the warm-up call (default: "
                       "the first evaluation example; a node without the dataset gets one this way)")

    load = sub.add_parser("loadtest", help="drive a served variant with MLPerf LoadGen: p50..p99.9 latency, QPS, "
                          "peak QPS at a p99 bound; recorded as the variant's serving section")
    load.add_argument("target", help="http://127.0.0.1:PORT of a running `squeezebench serve`, or a results folder "
                      "(the service is then started on 127.0.0.1 and stopped afterwards)")
    _add_serve_args(load)
    load.add_argument("--scenario", choices=["server", "offline"], default="server",
                      help="server: Poisson arrivals at --target-qps; offline: every query at once (default server)")
    load.add_argument("--p99-ms", type=float, required=True, help="p99 latency bound in ms")
    rate = load.add_mutually_exclusive_group()
    rate.add_argument("--target-qps", type=float, help="server scenario: arrival rate (queries per second)")
    rate.add_argument("--find-peak", action="store_true", help="search the highest rate whose p99 meets the bound "
                      "(one offline test, then at most --max-steps server tests)")
    load.add_argument("--max-steps", type=_positive_int, default=6, help="server tests of --find-peak at most")
    load.add_argument("--duration-s", type=float, default=60.0, help="LoadGen's minimum duration per test (default 60)")
    load.add_argument("--min-queries", type=_positive_int, default=1024,
                      help="LoadGen's minimum query count per test (default 1024)")
    load.add_argument("--clients", type=_positive_int, default=64, help="concurrent client connections at most")
    load.add_argument("--allow-remote", action="store_true",
                      help="allow a URL that is not on this machine's loopback (only a machine you may load)")
    load.add_argument("--executor", choices=["local", "ray"], default="local",
                      help="local: the service (for a results folder) and LoadGen on this machine (default); ray: "
                      "the service on a Ray node that offers what the variant needs, LoadGen on another node")
    load.add_argument("--ray-address", help="with --executor ray: the cluster to join (host:port or auto; default "
                      "$RAY_ADDRESS, else auto)")
    load.add_argument("--ray-resources", metavar="JSON", help="with --executor ray: custom Ray resources the service "
                      "asks for, per device, method or METHOD@DEVICE, e.g. '{\"cpu\": {\"node_type_a\": 0.01}}'")

    meth = sub.add_parser("methods", help="list compression methods, their parameters and where they are defined; "
                          "with --model and --task: which apply to that model, and why the others do not")
    meth.add_argument("--model", help="a model (local directory, offline:NAME, python:..., Hugging Face id)")
    meth.add_argument("--task", help="the task the model would be measured on")
    meth.add_argument("--device", default="cpu", help="the device to check the methods for (default: cpu)")
    sub.add_parser("tasks", help="list tasks and their metrics")
    sub.add_parser("measures", help="list what is measured: record sections and table columns")
    return parser


def _protocol(args):
    from squeezebench.protocol import from_arguments

    return from_arguments(args)


def _default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _run(config) -> int:
    from squeezebench.progress import Progress
    from squeezebench.report.table import table
    from squeezebench.runner import Runner

    with Progress() as progress:
        records = Runner(config, progress=progress).run()
    print()
    print(table([config.out / config.team]))
    # 0: every variant ok or skipped for a stated reason; 1: any failed (the table is still printed)
    return 1 if any(r.status not in ("ok", "skipped") for r in records) else 0


def cmd_run(args) -> int:
    return _run(_run_config(args, args.model, args.methods, args.devices or _default_devices()))


def _run_config(args, models: list[str], methods: list[str], devices: list[str]):
    from squeezebench.runner import RunConfig
    from squeezebench.tasks.data import DatasetOptions

    return RunConfig(models=models, task=args.task, methods=methods, devices=devices, dataset=args.dataset,
                     dataset_options=DatasetOptions(args.text_column, args.label_column or None, args.input_column,
                                                    args.target_column, args.audio_column),
                     protocol=_protocol(args), out=args.out, team=args.team, force=args.force,
                     trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer, timeout_s=args.timeout,
                     command="squeezebench " + shlex.join(sys.argv[1:]), plugins=args.plugin,
                     executor=args.executor, executor_options=_executor_options(args))


def cmd_search(args) -> int:
    from squeezebench.search.command import run_search

    devices = args.devices or ["cpu"]
    if args.force:
        raise SqueezebenchError("search reuses every record already in --out by design; to start over, use another --out")
    if len(devices) != 1:
        raise SqueezebenchError(f"search measures on one device; got --devices {' '.join(devices)}")
    return run_search(args, _run_config(args, [args.model], ["original"], devices), say=print)


def _executor_options(args) -> dict:
    """The --ray-* options, for the ray executor only (one line naming the option otherwise)."""
    given = {"address": args.ray_address, "artifact_dir": args.artifact_dir, "resources": args.ray_resources}
    given = {k: v for k, v in given.items() if v is not None}
    if given and args.executor != "ray":
        names = {"address": "--ray-address", "artifact_dir": "--artifact-dir", "resources": "--ray-resources"}
        flags = ", ".join(names[k] for k in given)
        raise SqueezebenchError(f"{flags} need --executor ray")
    return given


def cmd_demo(args) -> int:
    from squeezebench.runner import RunConfig

    if args.limit is None:
        args.limit = DEMO_LIMIT
    config = RunConfig(models=[DEMO_MODEL], task="sentence-embedding", methods=["original", "fp16", "bf16"],
                       devices=args.devices or ["cpu", "cuda"], dataset="bbc-news", protocol=_protocol(args),
                       out=args.out, team=args.team, force=args.force, timeout_s=args.timeout,
                       command="squeezebench " + shlex.join(sys.argv[1:]), plugins=args.plugin)
    print(f"squeezebench demo: all-MiniLM-L6-v2 (sentence-embedding) on {args.limit} BBC News articles, "
          "methods original/fp16/bf16; each variant is built and measured in its own process.", file=sys.stderr)
    return _run(config)


def cmd_table(args) -> int:
    from squeezebench.report import merge
    from squeezebench.report.table import collect, table

    if args.dry_run and not args.update:
        raise SqueezebenchError("--dry-run goes with --update README.md")
    if not args.update:
        print(table(args.dirs, args.format, args.lang, extra_columns=args.extra_columns), end="")
        return 0
    old = merge.read_text(args.update)
    new = merge.replace_block(old, table(args.dirs, args.format, args.lang, args.extra_columns), args.block,
                              str(args.update))
    if new is None:  # no squeezebench markers: merge into the course's table, found by its header
        if args.format != "markdown" or args.extra_columns or args.block:
            raise SqueezebenchError(f"{args.update} has no squeezebench:table{' ' + args.block if args.block else ''} "
                                    "block; merging into its table takes markdown without --extra-columns")
        rows = collect(args.dirs)
        if not rows:
            raise SqueezebenchError(f"no results found in {', '.join(map(str, args.dirs))}; run `squeezebench run` first")
        new = merge.merge(old, rows, str(args.update))
    if args.dry_run:
        print(merge.diff(args.update, old, new), end="")
        return 0
    if new != old:
        merge.write_atomic(args.update, new)  # refuses a file its owner made read-only
    print(f"updated {args.update}" if new != old else f"{args.update} already up to date", file=sys.stderr)
    return 0


def cmd_import_table(args) -> int:
    from squeezebench.report.imports import import_table, write_imported

    records = import_table(args.readme, args.team, args.task, args.only)
    path = write_imported(records, args.out, args.team, "squeezebench " + shlex.join(sys.argv[1:]))
    parsed = sum(1 for r in records for c in r.imported.cells.values() if c.value is not None)
    print(f"imported {len(records)} rows ({parsed} cells read as numbers, the rest kept as text) into {path}; "
          "they are marked 'imported, not measured by squeezebench'", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from squeezebench.report.html import write_report

    path = write_report(args.dirs, args.output)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _serve_options(args):
    from squeezebench.serving.server import ServeOptions

    return ServeOptions(args.method, args.device, args.model, args.team, args.threads, args.max_batch,
                        args.batch_window_ms)


def _say(line: str) -> None:
    print(f"squeezebench: {line}", flush=True)


def cmd_serve(args) -> int:
    from squeezebench.serving.server import run_serve

    return run_serve(args.results, _serve_options(args), args.host, args.port, say=_say, warmup_body=args.warmup_body)


def cmd_loadtest(args) -> int:
    from squeezebench.serving.loadtest import LoadSettings, run_loadtest

    settings = LoadSettings(args.scenario, args.p99_ms, args.target_qps, args.duration_s, args.min_queries,
                            args.clients, max_steps=args.max_steps)
    if args.executor == "ray":
        from squeezebench.serving.ray_placement import ray_loadtest

        if re.match(r"^[a-z]+://", args.target) or not Path(args.target).is_dir():
            raise SqueezebenchError(f"--executor ray starts the service itself: pass a results folder, not "
                                    f"{args.target!r}")
        section, path, logs = ray_loadtest(Path(args.target), _serve_options(args), settings, args.find_peak,
                                           args.ray_address, args.ray_resources, args.allow_remote, args.plugin,
                                           say=_say)
    else:
        if args.ray_address or args.ray_resources:
            raise SqueezebenchError("--ray-address and --ray-resources need --executor ray")
        section, path, logs = run_loadtest(args.target, _serve_options(args), settings, args.find_peak,
                                           args.allow_remote, args.plugin, say=_say)
    rate = f"peak {section.peak_qps:.1f} QPS" if section.peak_qps else f"{section.achieved_qps or 0:.1f} QPS"
    p99 = f"{section.p99_ms:.1f}" if section.p99_ms is not None else "?"
    print(f"{section.scenario}: {rate}, p99 {p99} ms (bound {section.p99_bound_ms:g}), LoadGen {section.verdict}"
          + (f": {'; '.join(section.reasons)}" if section.reasons else ""))
    print(f"recorded in {path}; LoadGen logs in {logs}", file=sys.stderr)
    return 0 if not section.errors else 1


def cmd_methods(args) -> int:
    import dataclasses

    from squeezebench.methods import METHODS

    reasons = _method_reasons(args) if args.model or args.task else None
    for name, m in METHODS.items():
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(m.config_cls)) or "no parameters"
        calib = "needs calibration data" if m.needs_calibration else "no calibration"
        models = f"models: {m.model_types}; " if m.model_types != "any" else ""
        print(f"{name:28s} {m.summary}\n{'':28s} {m.kind}; parameters: {params}; devices: {', '.join(m.devices)}; "
              f"runtime: {m.runtime}; {models}{calib}\n{'':28s} defined in {m.defined_in()}")
        if reasons is not None:
            reason = reasons[name]
            print(f"{'':28s} {'applies' if reason is None else 'does not apply: ' + reason}")
    if reasons is not None:
        fit = sorted(n for n, r in reasons.items() if r is None)
        print(f"\n{len(fit)} of {len(reasons)} methods apply to {args.model} ({args.task}, {args.device}): {', '.join(fit)}")
    return 0


def _method_reasons(args) -> dict:
    """Method name -> None (applies) or why not, for the model loaded as the build phase loads it."""
    from squeezebench.search.candidates import method_reasons

    if not (args.model and args.task):
        raise SqueezebenchError("methods: --model and --task go together, e.g. "
                                "`squeezebench methods --model offline:all-minilm-l6-v2 --task sentence-embedding`")
    return method_reasons(args.model, args.task, args.device)


def cmd_tasks(args) -> int:
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.metrics import METRICS

    for name, task in TASKS.items():
        print(f"{name:22s} v{task.version}  primary metric: {task.primary_metric}; default dataset: {task.default_dataset}")
        if task.metrics:
            print(f"{'':22s}     metrics: {', '.join(task.metrics)}")
    print("\nmetrics:")
    for name, m in METRICS.items():
        arrow = "higher is better" if m.higher_is_better else "lower is better"
        print(f"  {name:22s} [{m.unit}] {arrow}, v{m.version}: {m.description}")
    return 0


def cmd_measures(args) -> int:
    from squeezebench.measures import MEASURES

    for name, m in MEASURES.items():
        cols = "; ".join(f"{c.headers['en']} [{c.unit}]" + (" (course table)" if c.course else "") for c in m.columns)
        doc = (type(m).__doc__ or "").strip().splitlines()[0] if type(m).__doc__ else ""
        print(f"{name:14s} {m.phase:8s} {doc}\n{'':23s} columns: {cols or 'none (recorded only)'}")
    return 0


COMMANDS = {"run": cmd_run, "search": cmd_search, "demo": cmd_demo, "table": cmd_table, "import-table": cmd_import_table,
            "report": cmd_report, "serve": cmd_serve, "loadtest": cmd_loadtest, "methods": cmd_methods, "tasks": cmd_tasks, "measures": cmd_measures}


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="squeezebench: %(levelname)s: %(message)s")
    try:
        from squeezebench.plugins import load_plugins

        load_plugins(args.plugin)
        return COMMANDS[args.command](args)
    except SqueezebenchError as exc:
        print(f"squeezebench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk while saving a record: say which file, keep what was written
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"squeezebench: error: {exc.strerror or exc}{where}; results recorded so far are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or isolation.Stopped (SIGTERM/SIGHUP while a worker ran)
        why = str(exc) or "interrupted"
        print(f"squeezebench: {why}; results recorded so far are kept", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
