"""The public Python API, re-exported lazily by :mod:`musicdistill`: ``load`` and its ``Model``
(:mod:`musicdistill.api.model`, :mod:`musicdistill.api.loading`), and the thin ``distill``,
``merge`` and ``evaluate`` over what the command line runs (:mod:`musicdistill.api.workflows`)."""
