"""Pictures people look at: the self-contained HTML report of an experiment (`xtlunet report`, report/build.py) and
the QC overlay montages of segmentations (`predict --qc` and the report's validation cases, report/qc.py).

Modules: collect (an experiment's data), figures (matplotlib Figures as PNG bytes), qc (overlay montages),
html (template and embedding), build (the sections and the page). Nothing is imported here, so that `predict --qc`
loads the QC module alone.
"""
