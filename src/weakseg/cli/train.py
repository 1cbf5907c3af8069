"""``weakseg train --config CONFIG.yaml [--set key=value ...]``: train a segmentation network.

The YAML file sets the defaults of every key of :class:`weakseg.engine.config.TrainConfig`;
``--set`` overrides them (VALUE is parsed as YAML; dotted keys reach into ``losses``, e.g.
``--set losses.dense_crf.weight=1e-9``). Unknown keys are errors. Under ``torchrun`` the same
command trains with DistributedDataParallel. SIGINT / SIGTERM write ``checkpoint.pth`` before
exiting; ``--resume auto`` (or a path) continues exactly where it stopped.

The proposal baselines of the paper's Table 2 are config keys: ``losses: {densecrf_adm: ...}``
(DenseCRF-ADM), ``supervision: full`` + ``label_dir`` (GrabCut masks of ``weakseg proposals
grabcut``), ``proposal_every: N`` (iterative proposals); see ``configs/synthetic_*.yaml``.

Examples::

    weakseg train --config configs/synthetic.yaml
    weakseg train --config configs/acdc_unet_densecrf.yaml --set epochs=20
    weakseg train --config configs/synthetic_adm.yaml
    torchrun --nproc-per-node 4 -m weakseg train \
        --config configs/voc_deeplabv3plus_resnet101_densecrf.yaml
"""

from __future__ import annotations

import argparse

from weakseg.cli._common import add_command, add_set_option


def arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``weakseg train`` to ``parser``."""
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    add_set_option(
        parser, "override a config key (repeatable); VALUE is YAML, dotted keys reach into losses"
    )
    parser.add_argument("--resume", default=None, help="checkpoint to resume, or 'auto'")
    parser.add_argument(
        "--print-config", action="store_true", help="print the merged config and exit"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier run in output_dir (its checkpoints, logs, config.yaml, "
        "tensorboard/, proposals/) instead of refusing",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    summary = "train a network (pCE + regularized losses) from a YAML config"
    parser = add_command(subparsers, "train", summary, __doc__)
    arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from weakseg.engine.train import main

    return main(args)
