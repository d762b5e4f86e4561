"""Prompting: a document + a prompt variant (+ few-shot examples) -> an :class:`Instance`, as plain text and as
a conversation (:mod:`evalsuite.prompting.chat`).

Templates run in a sandboxed Jinja2 environment with ``StrictUndefined``: a template that names a field
the document lacks fails with the template file, line and field; templates cannot reach Python internals.
"""

from evalsuite.prompting.chat import ChatFormat, Message, chat_text, check_system_role
from evalsuite.prompting.fewshot import FewshotSampler
from evalsuite.prompting.render import Instance, PromptRenderer

__all__ = ["ChatFormat", "FewshotSampler", "Instance", "Message", "PromptRenderer", "chat_text", "check_system_role"]
