"""Reading a campaign YAML file; every problem becomes one paragraph naming the field and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestration.config.schema import (
    AddressSettings,
    CampaignConfig,
    ConfigError,
    DaskRunner,
    LocalClusterSettings,
    LocalRunner,
    SlurmClusterSettings,
)


def parse_config(data: object, *, source: str = "<config>", base_dir: Path | None = None) -> CampaignConfig:
    """Validate already-parsed YAML data; relative paths are taken relative to ``base_dir``."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source} is {kind}, not a mapping of campaign settings; start from configs/demo.yaml.")
    try:
        cfg = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source)) from None
    if base_dir is not None:
        updates: dict[str, Any] = {}
        if cfg.seed_data.path is not None and not cfg.seed_data.path.is_absolute():
            updates["seed_data"] = cfg.seed_data.model_copy(update={"path": (base_dir / cfg.seed_data.path).resolve()})
        if updates:
            cfg = cfg.model_copy(update=updates)
    return cfg


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file; raises :class:`ConfigError` with a one-paragraph message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"campaign config {p} does not exist; check the path (shipped configs are in configs/).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read campaign config {p}: {exc}; check the file and its permissions.") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc, p)) from None
    except RecursionError:
        raise ConfigError(f"{p} is nested too deeply to be a campaign config; start from configs/demo.yaml.") from None
    return parse_config(data, source=str(p), base_dir=p.parent)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML says keys are
    unique; PyYAML would silently keep the last value)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
    seen: dict[object, yaml.Node] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"the key {key!r} appears twice (first at line {first.start_mark.line + 1}); keep one of them",
                key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _yaml_message(exc: yaml.YAMLError, path: Path) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return (
        f"{path} is not valid YAML{where}: {detail}; check the indentation, colons and quoting near that line "
        "(YAML needs spaces, not tabs, and `key: value` pairs)."
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("local", "address", "slurm", "dask"):
            continue  # discriminator tags add nothing for the reader
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``loc`` (for listing allowed keys)."""
    tagged: dict[str, dict[str, type[BaseModel]]] = {
        "runner": {"local": LocalRunner, "dask": DaskRunner},
        "cluster": {"local": LocalClusterSettings, "address": AddressSettings, "slurm": SlurmClusterSettings},
    }
    model: type[BaseModel] | None = CampaignConfig
    prev: int | str = ""
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if str(prev) in tagged and part in tagged[str(prev)]:
            model, prev = tagged[str(prev)][part], part
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model, prev = _submodel(field.annotation), part
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    """One paragraph: which file, which field path, what is wrong and how to fix it."""
    parts: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _field_path(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            model = _model_at(loc)
            allowed = sorted(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            parts.append(f"`{path}` is not a known setting; {hint}remove it or use one of: {', '.join(allowed)}")
        elif kind == "missing":
            parts.append(f"`{path}` is required; add it")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            parts.append(f"`{path}`: {msg}{shown}")
    n = len(parts)
    head = f"{source} is not a valid campaign config ({n} problem{'s' if n > 1 else ''}): "
    return head + "; ".join(parts) + ". Fix the file and run again; configs/demo.yaml shows every section."
