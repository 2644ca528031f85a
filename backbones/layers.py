"""Small layers shared by the families (pure PyTorch)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def is_tracing() -> bool:
    """True while a graph is being traced (``torch.export`` and the ONNX exporters, ``torch.compile``,
    ``torch.jit.trace``). Per-size caches must then be bypassed: they would store traced placeholder
    tensors on the module and tie the graph to the traced input size."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor ("channels_first").

    Parameters are named ``weight``/``bias`` like the official channels_first LayerNorms of ConvNeXt and
    Conv2Former, so their checkpoints load unchanged. The official classes compute mean/var by hand; this
    uses ``F.layer_norm`` on a permuted view (same result within float rounding, and faster).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
