"""``synth-augment generator train|sample|grid``: the generator stages from the command line.

    synth-augment generator train  --domain D     ingest + split (cached) and train/resume the generator
    synth-augment generator sample --domain D     ... then the balanced synthetic set (resumable)
    synth-augment generator grid   --domain D --out grid.png [--per-class 8]
                                                  ... then one row of samples per class, for eyes

On several GPUs: ``accelerate launch --multi_gpu --num_processes N -m flows.cli generator train ...``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, parents: Any) -> None:  # the front door (flows/): it may wire every floor
    """Register ``generator`` and its actions on the main CLI's subparsers (see flows/cli.py)."""
    gen = sub.add_parser("generator", help="train the diffusion generator, sample the synthetic set",
                         description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = gen.add_subparsers(dest="generator_command", required=True, metavar="ACTION")
    train = gsub.add_parser("train", parents=[parents.domain], help="train or resume the generator on the 20%% sample",
                            description="Ingest and split (cached), then train or resume the class-conditional "
                                        "generator.")
    sample = gsub.add_parser("sample", parents=[parents.domain], help="write the balanced synthetic set (resumable)",
                             description="Train if needed, then write synthesis.per_class PNGs per class and a "
                                         "manifest.")
    grid = gsub.add_parser("grid", parents=[parents.domain], help="save a grid of samples, one row per class",
                           description="Train if needed, then save one row of samples per class as a PNG.")
    grid.add_argument("--out", required=True, help="output PNG path")
    grid.add_argument("--per-class", type=int, default=8, help="samples per class (default: 8)")
    for action in (train, sample, grid):
        action.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.run import stages_to_run
    from pipeline.cli_args import config_from_args

    config = config_from_args(args)
    progress = not args.quiet
    # the stage table's own functions; ``sample`` trains the reference classifier first when selection needs it
    done: dict[str, Any] = {"data": args.data}
    for stage in stages_to_run(config, "synthesis" if args.generator_command == "sample" else "generator"):
        done[stage.name] = stage.run(config, done, progress)
    split, generator = done["split"], done["generator"]
    s = generator.summary
    print(f"[generator] {'reused' if generator.cached else 'trained'}: {s['steps']} steps, {s['parameters']:,} "
          f"parameters, {s['image_size']} px {s['mode']}, final loss {s['final_loss']}; "
          f"pipeline {generator.pipeline_path} (content hash {generator.pipeline_hash[:12]})")
    if args.generator_command == "sample":
        synthesis = done["synthesis"]
        t = synthesis.summary
        print(f"[synthesis] {'reused' if synthesis.cached else 'done'}: {t['images']} images "
              f"({t['per_class']} per class, {t['sampler']} {t['steps']} steps, guidance {t['guidance_scale']}); "
              f"manifest {synthesis.manifest_path.with_suffix('.csv')}")
    elif args.generator_command == "grid":
        from pipeline.generator.sampling import load_pipeline
        from pipeline.generator.stage import real_sample
        from pipeline.generator.synthesis import sample_grid
        from pipeline.imageio import save_png

        if args.per_class < 1:
            from pipeline.errors import ConfigError

            raise ConfigError(f"--per-class = {args.per_class} is invalid; expected an integer >= 1")
        pipe = load_pipeline(generator.pipeline_path)
        grid = sample_grid(pipe, args.per_class, config.seed, config.synthesis,
                           real=real_sample(config, split.split_path) if config.synthesis.mode == "real-seeded"
                           else None)
        save_png(grid, args.out)
        print(f"[grid] rows: {', '.join(pipe.config.class_names)}; saved {args.out}")
    return 0
