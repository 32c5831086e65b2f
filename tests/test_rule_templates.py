"""Rule templates that are a constant or one variable path are answered without Jinja; the answer
must be Jinja's own, and anything the shortcut cannot answer exactly must still reach Jinja."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from config.rules import RuleTemplate, template_environment

CONTEXT: dict[str, Any] = {
    "event": {"id": "e-1", "type": "contacts/delete", "received_at": 1700000000000},
    "data": {"user": {"id": "user_1", "name": None, "items": "a key named items"}, "count": 3, "ok": True},
    "ops_recipients": "ops@example.com",
}


@pytest.mark.parametrize(
    "source",
    [
        "plain text, no template",
        "{{ event.id }}",
        "{{event.type}}",
        "{{ data.user.id }}",
        "{{ data.user.name }}",  # None renders as Jinja renders it
        "{{ data.count }}",
        "{{ data.ok }}",
        "{{ event.received_at }}",
        "{{ data.user }}",
        "{{ ops_recipients }}",
        "{{ data.user.items }}",  # a dict method's name: Jinja's answer (the method), not the key
        "{{ data.user.name | default('nobody', true) }}",
        "Hello {{ data.user.id }}!",
    ],
)
def test_every_shortcut_answer_is_jinjas_own(source: str) -> None:
    env = template_environment()
    expected = env.from_string(source).render({**env.globals, **CONTEXT})
    assert RuleTemplate(env, source).render({**env.globals, **CONTEXT}) == expected


@pytest.mark.parametrize("source", ["{{ data.missing }}", "{{ data.count.id }}", "{{ nothing }}"])
def test_what_does_not_resolve_fails_with_jinjas_error(source: str) -> None:
    env = template_environment()
    with pytest.raises(jinja2.UndefinedError) as caught:
        RuleTemplate(env, source).render({**env.globals, **CONTEXT})
    with pytest.raises(jinja2.UndefinedError) as expected:
        env.from_string(source).render(CONTEXT)
    assert str(caught.value) == str(expected.value)


def test_globals_reach_templates_that_need_jinja() -> None:
    env = template_environment()
    template = RuleTemplate(env, "{% for n in range(3) %}{{ n }}{% endfor %}")
    assert template.render({**env.globals, **CONTEXT}) == "012"


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.user.id }}-{{ event.type | replace('/', '.') }}",
        "{{ data.missing | default('fallback') }}",
        "{{ data.user.name | default('nobody', true) }}",
        "{% if data.user.missing is defined %}yes{% else %}no{% endif %}",
        "{{ data.user.items }}",  # the dict method, as Jinja's sandbox gives it
        "{{ data.user.items() | list | length }}",
        "{{ data.user.__class__ }}",  # refused by the sandbox either way
        "{{ data.missing }}",
        "{{ data.count.id }}",
    ],
)
def test_the_rule_sandbox_answers_as_jinjas_own(source: str) -> None:
    """The sandbox reads dict keys directly; every answer, and every error, is the stock sandbox's."""
    stock = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    ours = template_environment()
    assert type(ours) is not ImmutableSandboxedEnvironment  # the fast path is what is under test

    def outcome(env: ImmutableSandboxedEnvironment) -> str:
        try:
            return env.from_string(source).render(CONTEXT)
        except jinja2.TemplateError as exc:
            return f"{type(exc).__name__}: {exc}"

    assert outcome(ours) == outcome(stock)
