"""Command line: ``python -m gradchain recipe`` (the main job) and ``python -m gradchain demo``."""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradchain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="every optimizer of the lecture on scikit-learn's digits")
    demo.add_argument("--epochs", type=positive_int, default=20)
    demo.add_argument("--batch-size", type=positive_int, default=64)
    demo.add_argument("--out", default="demo-output", help="folder for loss_curves.png")
    demo.add_argument("--seed", type=int, default=0)
    recipe = commands.add_parser("recipe", help="the lecture's 7-step tuning recipe on digits, with a report")
    recipe.add_argument("--out", default="gradchain-report", help="folder for report.md and its pictures")
    recipe.add_argument("--small", action="store_true", help="fewer epochs (CI, quick look)")
    recipe.add_argument("--seed", type=int, default=0)
    recipe.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="the CNN on 8×8 images (default) or the MLP")
    recipe.add_argument("--budget", type=positive_float, default=None, metavar="SECONDS",
                        help="stop step 7's refinement loop once this many seconds are spent")
    args = parser.parse_args(argv)
    from gradchain._optional import missing

    message = missing("matplotlib", extra="plot", purpose=args.command)  # before any work, not after it
    if message:
        parser.exit(1, message + "\n")
    if args.command == "demo":
        from gradchain.examples import optimizer_demo as job

        job.main(epochs=args.epochs, batch_size=args.batch_size, out=args.out, seed=args.seed)
    elif args.command == "recipe":
        from gradchain.examples import digits_recipe as job
        from gradchain.tuning import Interrupted

        try:
            job.main(out=args.out, small=args.small, seed=args.seed, model=args.model, budget=args.budget)
        except Interrupted as stop:
            print(stop, file=sys.stderr)
            raise SystemExit(130) from None
        except OSError as error:
            parser.exit(2, f"python -m gradchain recipe: {error}\n")


if __name__ == "__main__":
    main()
