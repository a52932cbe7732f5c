"""Command line: ``squeezebench run | demo | table | methods | tasks``."""

from __future__ import annotations

import argparse
import logging
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


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--limit", type=_positive_int, help="use a deterministic, class-balanced subset of N examples")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and splits (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="latency batch size (default 1)")
    p.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per input for latency and scoring (default 128)")
    p.add_argument("--eval-batch-size", type=_positive_int, default=16)
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: PyTorch's choice, recorded)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up iterations before timing (default 5)")
    p.add_argument("--min-iters", type=_positive_int, default=30, help="timed iterations at least (default 30)")
    p.add_argument("--min-time", type=_non_negative_float, default=3.0, help="timed seconds at least (default 3)")
    p.add_argument("--max-time", type=_non_negative_float, default=60.0, help="stop timing after this many seconds")
    p.add_argument("--ppl-window", type=_positive_int, default=512)
    p.add_argument("--ppl-stride", type=_positive_int, default=256)
    p.add_argument("--ppl-max-tokens", type=_positive_int, default=8192)
    p.add_argument("--gen-tokens", type=_positive_int, default=32, help="tokens generated for decode speed")
    p.add_argument("--calibration-samples", type=_positive_int, default=32)
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default results/)")
    p.add_argument("--team", default="local", help="team name recorded with every result")
    p.add_argument("--force", action="store_true", help="measure again variants already in --out")
    p.add_argument("--timeout", type=_positive_int, default=3600, help="seconds per subprocess before it is killed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezebench", description="What did each compression method really buy, "
                                     "and what did it cost? Honest size, speed, memory and quality, in one table.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="measure a model and its compressed variants")
    run.add_argument("--model", action="append", required=True,
                     help="Hugging Face id or directory, gguf:FILE, onnx:FILE, python:pkg.module:function, offline:NAME "
                     "(repeatable)")
    run.add_argument("--task", required=True, help="see `squeezebench tasks`")
    run.add_argument("--methods", nargs="+", default=["original"],
                     help="methods or chains, e.g. original fp16 int4-weight-only:group_size=64 a+b")
    run.add_argument("--dataset", help="bbc-news, csv:PATH, jsonl:PATH, text-dir:PATH, image-dir:PATH, "
                     "imagenet-sample:PATH, hf:NAME[:SPLIT] (default: the task's)")
    run.add_argument("--text-column", default="text")
    run.add_argument("--label-column", default="label")
    run.add_argument("--audio-column", default="audio", help="csv/jsonl column of audio file paths (speech-recognition)")
    run.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code")
    run.add_argument("--tokenizer", help="tokenizer of an onnx:FILE model: directory, Hugging Face id or offline:NAME "
                     "(default: tokenizer files beside the .onnx file)")
    _add_measure_args(run)

    demo = sub.add_parser("demo", help="offline demo: all-MiniLM-L6-v2 on BBC News, original/fp16/bf16")
    _add_measure_args(demo)

    tab = sub.add_parser("table", help="merge result folders of one or many teams into one table")
    tab.add_argument("dirs", nargs="+", type=Path)
    tab.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    tab.add_argument("--lang", choices=["en", "ru"], default="en")
    tab.add_argument("--update", type=Path, help="rewrite the squeezebench:table block of this README")
    tab.add_argument("--block", default="", help="name of the block to rewrite, for READMEs with several tables")

    sub.add_parser("methods", help="list compression methods and their parameters")
    sub.add_parser("tasks", help="list tasks and their metrics")
    return parser


def _protocol(args):
    from squeezebench.tasks import Protocol

    return Protocol(batch_size=args.batch_size, seq_len=args.seq_len, eval_batch_size=args.eval_batch_size,
                    limit=args.limit, seed=args.seed, threads=args.threads, warmup_iters=args.warmup,
                    min_iters=args.min_iters, min_time_s=args.min_time, max_time_s=args.max_time,
                    ppl_window=args.ppl_window, ppl_stride=args.ppl_stride, ppl_max_tokens=args.ppl_max_tokens,
                    gen_new_tokens=args.gen_tokens, calibration_samples=args.calibration_samples)


def _default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(config) -> int:
    from squeezebench.report.table import table
    from squeezebench.runner import Runner

    runner = Runner(config, progress=_progress)
    records = runner.run()
    print()
    print(table([config.out / config.team]))
    failed = [r for r in records if r.get("status") == "failed"]
    return 1 if failed and len(failed) == len(records) else 0


def cmd_run(args) -> int:
    from squeezebench.runner import RunConfig
    from squeezebench.tasks.data import DatasetOptions

    config = RunConfig(models=args.model, task=args.task, methods=args.methods,
                       devices=args.devices or _default_devices(), dataset=args.dataset,
                       dataset_options=DatasetOptions(args.text_column, args.label_column or None, args.audio_column),
                       protocol=_protocol(args), out=args.out, team=args.team, force=args.force,
                       trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer, timeout_s=args.timeout,
                       command="squeezebench " + shlex.join(sys.argv[1:]))
    return _run(config)


def cmd_demo(args) -> int:
    from squeezebench.runner import RunConfig

    if args.limit is None:
        args.limit = DEMO_LIMIT
    config = RunConfig(models=[DEMO_MODEL], task="sentence-embedding", methods=["original", "fp16", "bf16"],
                       devices=args.devices or ["cpu", "cuda"], dataset="bbc-news", protocol=_protocol(args),
                       out=args.out, team=args.team, force=args.force, timeout_s=args.timeout,
                       command="squeezebench " + shlex.join(sys.argv[1:]))
    print(f"squeezebench demo: all-MiniLM-L6-v2 (sentence-embedding) on {args.limit} BBC News articles, "
          "methods original/fp16/bf16; each variant is built and measured in its own process.", file=sys.stderr)
    return _run(config)


def cmd_table(args) -> int:
    from squeezebench.report.table import table, update_readme

    text = table(args.dirs, args.format, args.lang)
    if args.update:
        update_readme(args.update, text, args.block)
        print(f"updated {args.update}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_methods(args) -> int:
    import dataclasses

    from squeezebench.methods import METHODS

    for name, m in METHODS.items():
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(m.config_cls)) or "no parameters"
        kind = "export" if m.is_export else "transform"
        calib = "needs calibration data" if m.needs_calibration else "no calibration"
        print(f"{name:28s} {m.summary}\n{'':28s} {kind}; parameters: {params}; devices: {', '.join(m.devices)}; "
              f"models: {m.model_types}; {calib}")
    return 0


def cmd_tasks(args) -> int:
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.metrics import METRICS

    for name, task in TASKS.items():
        print(f"{name:22s} v{task.version}  primary metric: {task.primary_metric}; default dataset: {task.default_dataset}")
    print("\nmetrics:")
    for name, m in METRICS.items():
        arrow = "higher is better" if m.higher_is_better else "lower is better"
        print(f"  {name:22s} [{m.unit}] {arrow}, v{m.version}: {m.description}")
    return 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "table": cmd_table, "methods": cmd_methods, "tasks": cmd_tasks}


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except SqueezebenchError as exc:
        print(f"squeezebench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("squeezebench: interrupted; results recorded so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
