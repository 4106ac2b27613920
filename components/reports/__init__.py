"""The report pages, in one place: the data page and the run page, their pictures and HTML.

  page.py       the page shell (inline CSS, no script), bar tables, one-file pages for the
                KFP UI and the Vertex console
  plots.py      the pictures: sample grid, width/height histograms (from TFDV statistics),
                confusion matrix, misclassified grid, training curves (inline SVG), fonts
  data_page.py  the data report: the gate's verdict, samples, class balance, sizes, ingest
  run_page.py   the run report: the Evaluator's verdict, confusion, per-class bars, curves,
                mistakes; then the data page's sections

Rendering only: each function is given what it shows (URIs of artifacts to read pictures
from, verdicts, histories). Who collects those is elsewhere: the data gate's executor
(components/data_validation), the local run's MLMD reader (pipeline/run_report.py) and the
cluster's report tasks (kubeflow/reports.py). Pillow draws the pictures and the browser the
text, so any class name, CJK included, shows on the page (matplotlib is not in the stack).
"""
