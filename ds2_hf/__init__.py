"""ds2_hf: DS2 data selection (Pang et al., ICLR 2025) on the Hugging Face stack.

    >>> import ds2_hf
    >>> curated, report = ds2_hf.curate(ds, score_column="score", embedding_column="embedding")
    >>> subset = ds2_hf.select(curated, budget=10_000, strategy="ds2")

Public names are imported lazily so that `import ds2_hf` stays cheap and the curation core never
pulls in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ds2_hf._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it; every sub-package registers its entry points here.
_LAZY = {
    "curate": "ds2_hf.curation.api",
    "CurationConfig": "ds2_hf.curation.api",
    "CurationReport": "ds2_hf.curation.report",
    "select": "ds2_hf.selection",
    "SelectionConfig": "ds2_hf.selection",
    "rate": "ds2_hf.rating",
    "RatingConfig": "ds2_hf.rating",
    "serialize": "ds2_hf.text",
    "to_messages": "ds2_hf.text",
    "SFTRecipe": "ds2_hf.sft.recipe",
    "embed": "ds2_hf.embedding",
    "EmbeddingConfig": "ds2_hf.embedding",
    "push_to_hub": "ds2_hf.hub",
    "EvalConfig": "ds2_hf.evaluation.harness",
    "evaluate_model": "ds2_hf.evaluation.harness",
}

if TYPE_CHECKING:  # pragma: no cover
    from ds2_hf.curation.api import CurationConfig, curate
    from ds2_hf.rating import RatingConfig, rate
    from ds2_hf.curation.report import CurationReport
    from ds2_hf.selection import SelectionConfig, select
    from ds2_hf.sft.recipe import SFTRecipe
    from ds2_hf.text import serialize, to_messages


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = sorted(_LAZY) + ["__version__"]
