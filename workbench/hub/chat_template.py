"""Chat templates: how a conversation becomes the text a causal LM reads, and which characters of
it are the assistant's.

A template is a Jinja2 template over `messages` (`[{"role", "content"}]`), `add_generation_prompt`,
`bos_token` and `eos_token`, rendered the way Hugging Face Transformers renders
`tokenizer.apply_chat_template`: a sandboxed, immutable Jinja2 environment
(`jinja2.sandbox.ImmutableSandboxedEnvironment`, so a checkpoint's template cannot reach Python),
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, `raise_exception(message)`,
`strftime_now(format)` and a `tojson` that does not escape HTML. `{% generation %}` blocks (TRL's
assistant-mask markers) render their body.

Where it comes from (`sft.template`): `auto` takes the checkpoint's own, `chat_template.jinja`
beside the checkpoint (what current Transformers writes), else `chat_template` in
`chat_template.json` or `tokenizer_config.json` (a string, or a list of named templates, of which
`default`), else `plain`; or one of the named templates below. KerasHub presets carry none.

The assistant's characters are found by rendering the conversation's prefixes, as TRL's
assistant masks do: for an assistant message k, the prompt up to it rendered with
`add_generation_prompt=True` ends where its turn starts, and the conversation up to and including
it ends where its turn ends (its end-of-turn token included, so the model learns to stop). Where a
template renders a prefix differently from the whole (Qwen3's drops earlier turns' reasoning),
the message's content is located in the whole render instead, followed by the end-of-turn text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from workbench.errors import WorkbenchError

# The named templates. Each assistant turn ends with `end_of_turn`, which generation stops at.
NAMED_TEMPLATES = {
    # One line per turn header; the turn ends with the tokenizer's end-of-sequence token, the one
    # token every tokenizer has (GPT-2's 512-token vocabulary of the own preset included).
    "plain": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
        "{% else %}{{ '### Assistant:\n' + message['content'] + eos_token }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"),
    # OpenAI's ChatML, as Qwen writes it.
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # Meta's Llama 3 Instruct.
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    # Google's Gemma: the assistant is the `model`; a system message opens the first user turn
    # (Gemma has no system role).
    "gemma": (
        "{{ bos_token }}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set prefix = messages[0]['content'] | trim + '\n\n' %}"
        "{% set turns = messages[1:] %}"
        "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '')"
        " + message['content'] | trim + '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
}
NAMED_END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>"}
DEFAULT_TEMPLATE = "plain"
TEMPLATE_FILE = "chat_template.jinja"


def _environment():
    """Transformers' environment for chat templates (`_compile_jinja_template`)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlocks(Extension):
        """`{% generation %}...{% endgeneration %}` renders what it holds."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationBlocks, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment


def _token_text(value):
    """A special token as `tokenizer_config.json` writes it: a string or `{"content": ...}`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def checkpoint_template(directory) -> tuple[Optional[str], dict]:
    """`(template source or None, {bos_token, eos_token})` from a checkpoint directory's files."""
    directory = Path(directory)
    config, template = {}, None
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise WorkbenchError(f"{config_path} is unreadable ({error})") from None
    tokens = {name: _token_text(config.get(name)) for name in ("bos_token", "eos_token")}
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text(encoding="utf-8"), tokens
    sources = [config]
    if (directory / "chat_template.json").is_file():
        try:
            sources.insert(0, json.loads((directory / "chat_template.json").read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise WorkbenchError(f"{directory / 'chat_template.json'} is unreadable "
                                 f"({error})") from None
    for source in sources:
        template = source.get("chat_template")
        if isinstance(template, list):  # named templates: Transformers uses "default"
            named = {item.get("name"): item.get("template") for item in template
                     if isinstance(item, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template.strip():
            return template, tokens
    return None, tokens


@dataclass
class ChatTemplate:
    """A compiled chat template with the special tokens it is rendered with.

    Attributes:
        name: `chatml`, `llama3`, `gemma`, `plain`, or where the checkpoint's came from.
        source: the Jinja2 text.
        bos_token, eos_token: the `bos_token` and `eos_token` variables ("" when the tokenizer
            has none).
        end_of_turn: the text that ends an assistant turn (generation stops there).
    """

    name: str
    source: str
    bos_token: str = ""
    eos_token: str = ""
    end_of_turn: str = ""

    def __post_init__(self):
        import jinja2

        try:
            self._compiled = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as error:
            raise WorkbenchError(f"chat template '{self.name}' does not compile: {error.message} "
                                 f"(template line {error.lineno})") from None
        if not self.end_of_turn:
            self.end_of_turn = self._probe_end_of_turn()

    def render(self, messages, add_generation_prompt=False, where=""):
        """The text of `messages`; a template that fails is one `WorkbenchError`."""
        try:
            return self._compiled.render(messages=messages,
                                         add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except Exception as error:  # a template's own raise_exception, undefined names, ...
            raise WorkbenchError(
                f"chat template '{self.name}' failed to render {where or 'a conversation'}: "
                f"{type(error).__name__}: {error}") from None

    def _probe_end_of_turn(self):
        """What the template writes after an assistant's content (whitespace stripped), else the
        end-of-sequence token."""
        probe = "\x00answer\x00"
        try:
            text = self._compiled.render(
                messages=[{"role": "user", "content": "question"},
                          {"role": "assistant", "content": probe}],
                add_generation_prompt=False, bos_token=self.bos_token,
                eos_token=self.eos_token)
        except Exception:
            return self.eos_token
        after = text[text.find(probe) + len(probe):].strip() if probe in text else ""
        return after or self.eos_token

    def assistant_spans(self, messages, where=""):
        """`(text, [(start, end)])`: the whole conversation and, for each assistant message, the
        characters of its turn (content and end-of-turn) in that text."""
        text = self.render(messages, where=where)
        spans, cursor = [], 0
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:index], add_generation_prompt=True, where=where)
            turn = self.render(messages[:index + 1], where=where)
            content = message["content"].strip()
            found = text.find(content, cursor) if content else -1
            lost = WorkbenchError(
                f"chat template '{self.name}' does not write assistant message {index + 1} of "
                f"{where or 'a conversation'} as given, so its tokens cannot be told apart; set "
                "sft.train_on=all or another sft.template")
            if text.startswith(prompt) and len(prompt) >= cursor:
                start = len(prompt)
            elif found >= 0:
                start = found
            else:
                raise lost
            if text.startswith(turn) and len(turn) > start:
                end = len(turn)
            else:
                found = text.find(content, start) if content else start
                if found < 0:
                    raise lost
                end = found + len(content)
                rest = text[end:]
                stripped = rest.lstrip()
                if self.end_of_turn and stripped.startswith(self.end_of_turn):
                    end += len(rest) - len(stripped) + len(self.end_of_turn)
            spans.append((start, end))
            cursor = end
        return text, spans

    def generation_prompt(self, prompt):
        """The text the model continues to answer `prompt` as a user turn."""
        return self.render([{"role": "user", "content": prompt}], add_generation_prompt=True,
                           where=f"generate.prompt {prompt!r}")


def special_tokens_of(tokenizer):
    """`{bos_token, eos_token}` of a KerasHub tokenizer ("" where it has none)."""
    return {"bos_token": getattr(tokenizer, "start_token", None) or "",
            "eos_token": getattr(tokenizer, "end_token", None) or ""}


def resolve_template(name, preset_dir, tokenizer) -> ChatTemplate:
    """The template `sft.template` names, for a checkpoint in `preset_dir` whose KerasHub
    tokenizer is `tokenizer`."""
    tokens = special_tokens_of(tokenizer)
    source, configured = checkpoint_template(preset_dir)
    tokens.update({key: value for key, value in configured.items() if value})
    if name == "auto":
        if source is not None:
            where = (TEMPLATE_FILE if (Path(preset_dir) / TEMPLATE_FILE).is_file()
                     else "the checkpoint's chat_template")
            return ChatTemplate(where, source, **tokens)
        name = DEFAULT_TEMPLATE
    if name not in NAMED_TEMPLATES:
        from workbench.errors import suggest

        raise WorkbenchError(f"unknown sft.template '{name}': "
                             f"{suggest(name, ['auto', *NAMED_TEMPLATES])}")
    return ChatTemplate(name, NAMED_TEMPLATES[name], end_of_turn=NAMED_END_OF_TURN.get(name, ""),
                        **tokens)
