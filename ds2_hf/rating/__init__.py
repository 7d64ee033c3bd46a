"""Rating every sample with an LLM (DS2 step 1): `rate(...)` is a `datasets.map` transform.

    >>> import ds2_hf
    >>> rated = ds.map(ds2_hf.rate(model="meta-llama/Llama-3.1-8B-Instruct", base_url="http://tgi:8080"),
    ...                batched=True, batch_size=256)

Pieces: `ds2_hf.prompts` (templates), `parsing` (reading the answer), `backends` (OpenAI-compatible
servers through `huggingface_hub.AsyncInferenceClient`, local `transformers`), `cache` (SQLite
request cache: the resume mechanism), `engine` (concurrency, retries, re-asks, error budget),
`transform` (the `Rater` object `rate` returns), `llama_server` (a local llama.cpp server).
"""

from ds2_hf.rating.config import RatingConfig
from ds2_hf.rating.engine import RatingAbortedError
from ds2_hf.rating.parsing import RatingParseError, parse_rating
from ds2_hf.rating.stats import RatingStats
from ds2_hf.rating.transform import Rater, rate

__all__ = [
    "Rater",
    "RatingAbortedError",
    "RatingConfig",
    "RatingParseError",
    "RatingStats",
    "parse_rating",
    "rate",
]
