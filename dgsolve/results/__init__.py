"""Finding, comparing and sweeping results: the results index (:mod:`.index`), the record of one
run directory (:mod:`.record`), the value a sweep optimises (:mod:`.objective`) and the
``dgsolve-results`` command (:mod:`.cli`). Run directories are the source of truth; the index is
a rebuildable cache of what they hold (``dgsolve-results reindex``)."""
