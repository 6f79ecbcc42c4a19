"""Command line: ``python -m gradchain demo``."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradchain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="every optimizer of the lecture on scikit-learn's digits")
    demo.add_argument("--epochs", type=positive_int, default=20)
    demo.add_argument("--batch-size", type=positive_int, default=64)
    demo.add_argument("--out", default="demo-output", help="folder for loss_curves.png")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from gradchain import demo as job

        job.main(epochs=args.epochs, batch_size=args.batch_size, out=args.out, seed=args.seed)


if __name__ == "__main__":
    main()
