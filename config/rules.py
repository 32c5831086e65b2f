"""Mapping rules: the TOML rules file, validated with pydantic, with every template compiled at load.

A file that does not validate raises ``ConfigError`` naming the file, the rule and the field, so the
process stops at start instead of failing event by event.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.errors import ConfigError

__all__ = [
    "FIELD_ID_PATTERN",
    "BroadcastSpec",
    "CompiledRule",
    "MatchSpec",
    "MergeSpec",
    "RuleSet",
    "RuleTemplate",
    "load_rules",
    "template_environment",
]

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
_KEPT_MATCHES = 4096
_VARIABLE_PATH = re.compile(r"^\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}$")  # {{ data.user.id }}
_ACTION_KINDS = ("magicbell.broadcast", "magnews.merge")
FIELD_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""A Magnews field id (``email``, ``magnify_user_id``): safe as an MQL identifier and in a Redis key."""
_DICT_ATTRIBUTES = frozenset(dir(dict))  # names a template reaches on a dict as the method, not the key


class _RuleSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, reading a JSON object's keys directly. Jinja's own ``getattr`` first looks for an
    attribute, which on a dict raises, then for the key: the same answer at twice the cost, and rule
    templates are mostly such lookups (``data.email``). Dict methods (``data.items``) still go the
    sandbox's way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def template_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox every rule template runs in: no attribute tricks, undefined names are errors."""
    return _RuleSandbox(undefined=jinja2.StrictUndefined, autoescape=False)


class RuleTemplate:
    """A compiled template field. Most fields are a constant or one variable path
    (``{{ data.user.id }}``); those are answered without Jinja, which costs more per call than the
    rest of an event's planning. Anything else, and any path that does not resolve through dict keys
    (an attribute, a missing key: Jinja names the error), is rendered by Jinja in the sandbox."""

    __slots__ = ("_constant", "_path", "template")

    def __init__(self, env: ImmutableSandboxedEnvironment, source: str):
        self.template = env.from_string(source)
        self._constant = source if not any(mark in source for mark in ("{{", "{%", "{#")) else None
        match = _VARIABLE_PATH.match(source)
        parts = match.group(1).split(".") if match else []
        # A name that is also a dict method (``data.items``) means the method to Jinja: leave it to Jinja.
        self._path = parts if parts and not any(part in _DICT_ATTRIBUTES for part in parts) else None

    def render(self, context: dict[str, Any]) -> str:
        """The rendered text; ``context`` must already hold the environment's globals."""
        if self._constant is not None:
            return self._constant
        if self._path is not None:
            value: Any = context
            for part in self._path:
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                return str(value)
        # ``Template.render`` without its per-call copy of the globals into a new dict.
        template = self.template
        return template.environment.concat(template.root_render_func(template.new_context(context, shared=True)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BroadcastSpec(_Strict):
    """``magicbell.broadcast``: every string is a template over the event."""

    kind: Literal["magicbell.broadcast"]
    recipients: list[str] = Field(min_length=1)
    title: str = Field(min_length=1)
    content: str | None = None
    action_url: str | None = None
    category: str | None = None
    topic: str | None = None
    custom_attributes: dict[str, str] = {}


class MatchSpec(_Strict):
    """How a merge finds its contact: the one whose field ``field`` (a field id, not a template)
    holds ``value`` (a template), looked up through the Magnews query API."""

    field: str = Field(pattern=FIELD_ID_PATTERN)
    value: str = Field(min_length=1)


class MergeSpec(_Strict):
    """``magnews.merge``: ``database``, ``key``, ``values``, ``options`` and ``match.value`` are templates.

    ``key`` names the database's primary-key field (the merge's contact is the one with that key);
    ``match`` finds the contact by another field first, and ``unmatched`` says what a merge whose
    contact is not found does: ``record`` it (the action ends ``unmatched``) or ``create`` the contact
    from ``values``, which can only be done when they hold the key.
    """

    kind: Literal["magnews.merge"]
    database: str = Field(min_length=1)
    key: str | None = Field(None, min_length=1)  # None: MAGBRIDGE_MAGNEWS_PRIMARY_KEY
    values: dict[str, str] = Field(min_length=1)
    options: dict[str, str | int | bool] = {}
    match: MatchSpec | None = None
    unmatched: Literal["record", "create"] = "record"

    @model_validator(mode="after")
    def _unmatched_needs_a_match(self) -> MergeSpec:
        if "unmatched" in self.model_fields_set and self.match is None:
            raise ValueError("unmatched: only a merge with a match can miss its contact; add match = {field, value}")
        return self


ActionSpec = Annotated[BroadcastSpec | MergeSpec, Field(discriminator="kind")]


class RuleSpec(_Strict):
    name: str = Field(pattern=_NAME_PATTERN)
    source: Literal["magnews", "magnify", "*"]
    types: list[str] = Field(min_length=1)
    actions: list[ActionSpec] = Field(min_length=1)
    enabled: bool = True


class RulesFileSpec(_Strict):
    rules: list[RuleSpec]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleSpec]) -> list[RuleSpec]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice (names key the idempotency ledger)")
            seen.add(rule.name)
        return rules


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule whose templates are compiled, keyed by the action field they fill."""

    name: str
    source: str
    types: tuple[str, ...]
    actions: tuple[BroadcastSpec | MergeSpec, ...]
    templates: tuple[dict[str, RuleTemplate], ...]

    def matches(self, source: str, event_type: str) -> bool:
        if self.source not in ("*", source):
            return False
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """All enabled rules of one file, in file order, and the globals their templates see."""

    path: Path
    rules: tuple[CompiledRule, ...]
    template_globals: dict[str, Any] = field(default_factory=dict)
    # Glob matching every rule for every event adds up; the answer per (source, type) is kept, for
    # as many pairs as a real bridge sees (event types are not a closed set, so it is bounded).
    _matches: dict[tuple[str, str], list[CompiledRule]] = field(default_factory=dict, compare=False, repr=False)

    def matching(self, source: str, event_type: str) -> list[CompiledRule]:
        found = self._matches.get((source, event_type))
        if found is None:
            found = [rule for rule in self.rules if rule.matches(source, event_type)]
            if len(self._matches) < _KEPT_MATCHES:
                self._matches[(source, event_type)] = found
        return found


def _template_fields(action: BroadcastSpec | MergeSpec) -> dict[str, str]:
    """Every template string of an action, under a dotted field path (``values.email``)."""
    fields: dict[str, str] = {}
    # ``unmatched`` is a choice and ``match.field`` a field id: neither is rendered.
    for key, value in action.model_dump(exclude={"kind", "unmatched"}).items():
        if key == "match":
            if value is not None:
                fields["match.value"] = value["value"]
            continue
        if isinstance(value, str):
            fields[key] = value
        elif isinstance(value, list):
            fields.update({f"{key}.{i}": item for i, item in enumerate(value)})
        elif isinstance(value, dict):
            fields.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, str)})
    return fields


def _compile(spec: RuleSpec, path: Path, env: ImmutableSandboxedEnvironment) -> CompiledRule:
    compiled: list[dict[str, RuleTemplate]] = []
    for index, action in enumerate(spec.actions):
        templates: dict[str, RuleTemplate] = {}
        for name, source in _template_fields(action).items():
            try:
                templates[name] = RuleTemplate(env, source)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(
                    f"rules file {path}: rule {spec.name!r}: actions.{index}.{name}: "
                    f"template syntax error: {exc.message}"
                ) from exc
        compiled.append(templates)
    return CompiledRule(spec.name, spec.source, tuple(spec.types), tuple(spec.actions), tuple(compiled))


def _describe(error: Any, raw: dict[str, Any]) -> str:
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        rules = raw.get("rules")
        name = rules[index].get("name", "?") if isinstance(rules, list) and isinstance(rules[index], dict) else "?"
        where = f"rule {name!r} (#{index + 1}): "
        loc = loc[2:]
    # Drop the discriminator tag pydantic puts in the path; ``kind`` already says it.
    field = ".".join(str(part) for part in loc if part not in _ACTION_KINDS) or "(rule)"
    return f"{where}{field}: {error['msg']}"


def load_rules(path: Path) -> RuleSet:
    """Read, validate and compile a rules file; any problem raises ``ConfigError`` naming it."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"rules file {path}: cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {path}: not valid TOML: {exc}") from exc
    try:
        spec = RulesFileSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, raw) for error in exc.errors())
        raise ConfigError(f"rules file {path}: {problems}") from exc
    env = template_environment()
    rules = tuple(_compile(rule, path, env) for rule in spec.rules if rule.enabled)
    return RuleSet(path=path, rules=rules, template_globals=dict(env.globals))
