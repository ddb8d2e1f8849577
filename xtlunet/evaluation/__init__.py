"""Evaluation: segmentation and lesion-wise metrics, classification metrics, and the statistics that compare arms.

Modules: ``segmentation_metrics`` (Dice, IoU, HD95, volumes, lesion detection on arrays),
``classification_metrics`` (AUC with CI, Youden point, ROC figure), ``statistics`` (DeLong,
Wilcoxon, paired bootstraps), ``tables`` (CSV and Markdown) and ``evaluate_folders``
(reference vs prediction folders of image files).
"""
