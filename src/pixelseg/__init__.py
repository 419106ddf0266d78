"""pixelseg: a PyTorch toolkit for semantic image segmentation.

Today it covers semantic segmentation only: models (FCN-8s/16s/32s, U-Net, UNet++,
DeepLabV3+ over torchvision encoders) in :mod:`pixelseg.models`, losses in
:mod:`pixelseg.losses`, streaming metrics in :mod:`pixelseg.metrics`, datasets and
augmentation in :mod:`pixelseg.data`, sliding-window and test-time-augmented prediction in
:mod:`pixelseg.inference`, and the ``pixelseg`` command (``train``, ``eval``, ``predict``,
``demo``, ``models``). Instance, panoptic and medical (3D) segmentation, model export and a
prediction service are planned; none of them exists yet.
"""
