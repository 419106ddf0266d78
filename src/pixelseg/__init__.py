"""pixelseg: a PyTorch toolkit for semantic image segmentation.

Today it covers semantic segmentation only: models (FCN-8s/16s/32s, U-Net, UNet++,
DeepLabV3+ over torchvision encoders) in :mod:`pixelseg.models`, losses in
:mod:`pixelseg.losses`, streaming metrics in :mod:`pixelseg.metrics`, datasets and
augmentation in :mod:`pixelseg.data`, sliding-window and test-time-augmented prediction in
:mod:`pixelseg.inference`, ONNX export with onnxruntime fp32 and INT8 backends in
:mod:`pixelseg.export`, and the ``pixelseg`` command (``train``, ``eval``, ``predict``,
``export``, ``demo``, ``models``). Instance, panoptic and medical (3D) segmentation and a
prediction service are planned; none of them exists yet.
"""
