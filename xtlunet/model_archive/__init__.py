"""Model archives: one trained model (chosen folds, one checkpoint kind, plans, dataset description, records)
as one zip with a model card that lists every file's sha256, and its checked, atomic import.

    export_model("501", "3d_fullres", "XTLTrainer", out="brain_xtl.zip")   # xtlunet export-model
    import_model("brain_xtl.zip")                                          # xtlunet import-model
"""
from xtlunet.model_archive.card import CARD_MD, CARD_NAME, FORMAT, FORMAT_VERSION
from xtlunet.model_archive.export import ExportResult, export_model
from xtlunet.model_archive.unpack import ImportResult, import_model

__all__ = ["CARD_MD", "CARD_NAME", "FORMAT", "FORMAT_VERSION", "ExportResult", "ImportResult", "export_model",
           "import_model"]
