"""Rating prompt templates: the DS2 prompt, an AlpaGasus-style grader, or your own.

    >>> from ds2_hf.prompts import get_template, list_templates
    >>> list_templates()
    ['alpagasus', 'ds2']
    >>> get_template("ds2").id                  # 'ds2@1#<hash>'
    >>> get_template("my_template.yaml")        # a file with the same keys as ds2-v1.yaml

Built-in templates are YAML files next to this module, named ``<name>-v<version>.yaml``. A new
wording gets a new version file; the hash in `PromptTemplate.id` changes with any edit anyway, so
cached answers are never reused for a different prompt.
"""

from __future__ import annotations

import re
from pathlib import Path

from ds2_hf.prompts.template import PromptTemplate

__all__ = ["PromptTemplate", "get_template", "list_templates"]

_DIR = Path(__file__).parent
_FILE_RE = re.compile(r"^(?P<name>[a-z0-9_]+)-v(?P<version>[0-9][0-9.]*)\.yaml$")


def _builtin_files() -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in _DIR.glob("*.yaml"):
        match = _FILE_RE.match(path.name)
        if match:
            found.setdefault(match["name"], {})[match["version"]] = path
    return found


def list_templates() -> list[str]:
    """Names of the built-in templates."""
    return sorted(_builtin_files())


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def get_template(spec: "str | Path | PromptTemplate") -> PromptTemplate:
    """Resolve a template: a `PromptTemplate`, a built-in name (``"ds2"``, ``"ds2@1"``), or a YAML/JSON path.

    >>> get_template("alpagasus@1").scale
    (0, 5)
    """
    if isinstance(spec, PromptTemplate):
        return spec
    text = str(spec)
    path = Path(text)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        return PromptTemplate.from_file(path)
    name, _, version = text.partition("@")
    versions = _builtin_files().get(name)
    if not versions:
        raise ValueError(
            f"Unknown prompt template {text!r}. Built-in templates: {list_templates()}; or pass the path "
            "of a YAML/JSON template file (copy one with `get_template('ds2').to_file('mine.yaml')`)."
        )
    if not version:
        version = max(versions, key=_version_key)
    if version not in versions:
        raise ValueError(f"Template {name!r} has versions {sorted(versions, key=_version_key)}, not {version!r}")
    return PromptTemplate.from_file(versions[version])
