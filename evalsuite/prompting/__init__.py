"""Prompting: a document + a prompt variant (+ few-shot examples) -> an :class:`Instance`.

Templates run in a sandboxed Jinja2 environment with ``StrictUndefined``: a template that names a field
the document lacks fails with the template file, line and field; templates cannot reach Python internals.
"""

from evalsuite.prompting.fewshot import FewshotSampler
from evalsuite.prompting.render import Instance, PromptRenderer

__all__ = ["FewshotSampler", "Instance", "PromptRenderer"]
