"""Post-processing learnt on cross-validation: per foreground label, keep the largest connected component or remove
components under a volume threshold, where that raises the label's pooled Dice without lowering its lesion-wise F1.

components.py   the operations on label maps (scipy.ndimage, full connectivity)
scores.py       component tables: pooled Dice, mean Dice and lesion F1 of any choice of kept components
learn.py        the per-label decision
plan.py         postprocessing.json (PostprocessingPlan)
folder.py       `xtlunet apply-postprocessing` on a folder of label files
"""
from xtlunet.postprocessing.components import KEEP_LARGEST, NONE, REMOVE_SMALL, apply_operation
from xtlunet.postprocessing.learn import learn_postprocessing
from xtlunet.postprocessing.plan import PostprocessingPlan
from xtlunet.postprocessing.scores import ClassScore, CvScore, case_tables, score_tables, tables_from_files

__all__ = ["KEEP_LARGEST", "NONE", "REMOVE_SMALL", "apply_operation", "learn_postprocessing", "PostprocessingPlan",
           "ClassScore", "CvScore", "case_tables", "score_tables", "tables_from_files"]
