"""2D→3D weight transfer: kernel conversion, input-channel adaptation, structural key matching, report."""
from xtlunet.transfer.apply import transfer_weights
from xtlunet.transfer.channels import adapt_input_channels
from xtlunet.transfer.checkpoint import load_checkpoint_state
from xtlunet.transfer.kernels import MODES, acs_kernel, acs_split, center_kernel, convert_kernel, inflate_kernel
from xtlunet.transfer.report import TensorRow, TransferReport, UnusedKey

__all__ = ["MODES", "TensorRow", "TransferReport", "UnusedKey", "acs_kernel", "acs_split", "adapt_input_channels",
           "center_kernel", "convert_kernel", "inflate_kernel", "load_checkpoint_state", "transfer_weights"]
