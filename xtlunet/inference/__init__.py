"""Prediction: sliding window with Gaussian weighting, mirroring TTA, fold ensemble, export to the original grid."""
from xtlunet.inference.ensemble import average_predictions
from xtlunet.inference.export import (export_prediction, probabilities_to_labels, revert_preprocessing,
                                      write_prediction)
from xtlunet.inference.mirroring import mirror_combinations, mirrored_logits
from xtlunet.inference.predict import predict_case
from xtlunet.inference.sliding_window import gaussian_importance_map, predict_sliding_window, window_starts

__all__ = [
    "average_predictions", "export_prediction", "probabilities_to_labels", "revert_preprocessing",
    "write_prediction", "mirror_combinations", "mirrored_logits", "predict_case", "gaussian_importance_map",
    "predict_sliding_window", "window_starts",
]
