"""Linguistic head roles measured for the packaged models, carried by ``head_roles`` (``meta["linguistic"]``).

Each record is :func:`attnscope.attribution.linguistic_heads.summary` of a run of ``attnscope linguistic-heads``
(300 BBC sentences parsed by spaCy's ``en_core_web_sm`` 3.8.0 — a parser's output, not gold trees — and the
coreference template set). Regenerate with :func:`attnscope.attribution.linguistic_heads.write_tables`.
"""

TABLES: dict[str, dict] = {}
