"""Link inline code that names a documented ``trpo_ref`` object to its API entry.

The Markdown pages mention functions as plain code spans, e.g.
```trpo_ref.policy.GaussianMLPPolicy.kl``` in the equation table of
math.md, so that they read well as raw Markdown too.  On the site, every
such span whose whole text is a dotted ``trpo_ref.…`` name becomes a
cross-reference to the API page (``py:obj``); a name that is not documented
stays plain code (and ``tests/test_docs_site.py`` checks that every function of
the equation table did get its link).
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform

_NAME = re.compile(r"trpo_ref(\.[A-Za-z_]\w*)+")


class AutolinkCode(SphinxPostTransform):
    """Wrap matching literals in a pending ``py:obj`` cross-reference (before references are resolved)."""

    default_priority = 5  # ReferencesResolver runs at 10

    def run(self, **kwargs):
        for lit in list(self.document.findall(nodes.literal)):
            text = lit.astext()
            if not _NAME.fullmatch(text):
                continue
            if any(isinstance(a, (nodes.reference, addnodes.pending_xref, addnodes.desc_signature))
                   for a in _ancestors(lit)):
                continue
            xref = addnodes.pending_xref("", refdomain="py", reftype="obj", reftarget=text,
                                         refexplicit=True, refwarn=False, refdoc=self.env.docname)
            lit.replace_self(xref)
            xref += lit


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def setup(app):
    app.add_post_transform(AutolinkCode)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
