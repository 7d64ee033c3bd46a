"""`ds2 embed`: add an ``embedding`` column (fixed-size float32) to a dataset.

    ds2 embed rated.parquet --output embedded.parquet                         # bge-large-en-v1.5, mean pooling
    ds2 embed rated.parquet --output embedded --model ./all-MiniLM-L6-v2 --max_length 256
    ds2 embed --config embed.yaml                                              # YAML keys = the option names

The text embedded is the DS2 serialization of each conversation (or ``--text_column``). Work is
written in shards next to the output, so an interrupted run resumes where it stopped. On several
GPUs or nodes use ``accelerate launch -m ds2_hf.embedding --dataset ... --output ...`` (same options).
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from ds2_hf.commands._common import add_io_arguments
    from ds2_hf.embedding import EmbeddingConfig

    add_io_arguments(parser, "where to write the embedded dataset (.parquet, .jsonl, or a folder for save_to_disk)")
    parser._add_dataclass_arguments(EmbeddingConfig)
    parser.add_argument("--num_shards", type=int, default=None, help="shard files written on the way (default 1); "
                        "more shards = less work lost if the run is killed")
    parser.add_argument("--map_batch_size", type=int, default=256, help="rows per datasets.map batch")


def run(args: argparse.Namespace) -> int:
    from ds2_hf.commands._common import config_from_args, require_input
    from ds2_hf.embedding import EmbeddingConfig, ShardedEmbeddingArguments, embed_sharded

    config = config_from_args(EmbeddingConfig, args)
    sharding = ShardedEmbeddingArguments(
        dataset=require_input(args), output=args.output, split=args.split,
        num_shards=args.num_shards, map_batch_size=args.map_batch_size,
    )
    out = embed_sharded(sharding, config)
    print(f"wrote {out} (embedding column {config.output_column!r}, model {config.model})")
    return 0
