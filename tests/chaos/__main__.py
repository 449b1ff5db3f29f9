"""``python -m tests.chaos --seed 7 --mutations 2000 --minutes 10``: one chaos run on a private
test bed; prints the report and exits 1 if any check failed (README.md beside this file)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import ChaosRun, ChaosSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mutations", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=10.0, help="the mutation phase")
    parser.add_argument("--failing", type=float, default=0.2, help="share of store requests")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(20.0, 40.0))
    parser.add_argument("--converge-timeout", type=float, default=600.0)
    parser.add_argument(
        "--stripe-threshold", default="16MiB", help="large objects striped from this size, or off"
    )
    parser.add_argument("--work", type=Path, help="keep logs and state here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="replicator-chaos-"))
    settings = ChaosSettings(
        work=work,
        seed=args.seed,
        mutations=args.mutations,
        minutes=args.minutes,
        failing_share=args.failing,
        kill_every_s=tuple(args.kill_every),
        converge_timeout_s=args.converge_timeout,
        stripe_threshold=args.stripe_threshold,
    )
    report = asyncio.run(ChaosRun(settings).run())
    print(report.render())
    print(f"logs and state: {work}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "figures": report.figures,
                    "problems": report.problems(),
                    "findings": report.findings,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
