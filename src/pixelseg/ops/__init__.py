"""Detection operators torchvision lacks (it has ``nms`` and ``batched_nms``, not Soft-NMS)."""

from pixelseg.ops.soft_nms import batched_soft_nms, soft_nms

__all__ = ["batched_soft_nms", "soft_nms"]
