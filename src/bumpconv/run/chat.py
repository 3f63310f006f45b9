"""Chat prompts: a model's chat template (the one its tokenizer record carries) applied to one
user message, as transformers' ``apply_chat_template`` renders it.

The template is Jinja, rendered in a sandbox with the settings transformers uses (trim_blocks,
lstrip_blocks, a ``raise_exception`` helper, ``bos_token``/``eos_token`` strings); a test
compares the result with transformers' own on SmolLM2's template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..format.errors import TokenizerError
from ..format.tokenizer_meta import TokenizerMeta

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def chat_prompt(record: TokenizerMeta | None, tokenizer: Tokenizer, message: str) -> str:
    """The prompt text for ``message`` from the user under the template of ``record`` (the
    tokenizer record a blob carries, or one built from the checkpoint's files), its
    ``bos_token``/``eos_token`` strings looked up in ``tokenizer``."""
    if record is None or record.chat_template is None:
        raise TokenizerError("--chat: the tokenizer has no chat template")

    def content(token_id: int | None) -> str | None:
        return None if token_id is None else tokenizer.id_to_token(token_id)

    eos = record.eos_token_ids[0] if record.eos_token_ids else None
    return render_chat(record.chat_template, message,
                       {"bos_token": content(record.bos_token_id), "eos_token": content(eos)})


def render_chat(template: str | list[dict[str, str]] | None, message: str,
                special: dict[str, str | None]) -> str:
    """The prompt text for ``message`` from the user, ending where the assistant's reply
    starts (``add_generation_prompt``). ``special``: bos_token / eos_token strings."""
    if template is None:
        raise TokenizerError("--chat: the tokenizer has no chat template")
    if isinstance(template, list):  # named templates: transformers picks "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
        if not isinstance(template, str):
            raise TokenizerError("--chat: the tokenizer's chat templates have no 'default'")
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(text: str) -> None:
        raise TokenizerError(f"--chat: the chat template refused the prompt: {text}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    context: dict[str, Any] = {"messages": [{"role": "user", "content": message}],
                               "add_generation_prompt": True, **special}
    try:
        return env.from_string(template).render(**context)
    except TemplateError as exc:
        raise TokenizerError(f"--chat: the chat template does not render ({exc})") from None
