"""pixelseg: a PyTorch toolkit for pixel-level image segmentation.

Trained end to end today: semantic segmentation, with models (FCN-8s/16s/32s, U-Net,
UNet++, DeepLabV3+ over torchvision encoders) in :mod:`pixelseg.models`, losses in
:mod:`pixelseg.losses`, datasets and augmentation in :mod:`pixelseg.data`, sliding-window
and test-time-augmented prediction in :mod:`pixelseg.inference`, ONNX export with
onnxruntime fp32 and INT8 backends in :mod:`pixelseg.export`, and the ``pixelseg`` command
(``train``, ``eval``, ``predict``, ``export``, ``demo``, ``models``), on one process or
several (``torchrun -m pixelseg``). The evaluation and data pieces of the tasks to come
exist as a library: COCO box and mask AP equal to pycocotools, COCO instance and Penn-Fudan
readers, the COCO panoptic format and PQ equal to the reference (:mod:`pixelseg.metrics`,
:mod:`pixelseg.data`), DICOM/NIfTI volumes, CT preprocessing and surface metrics
(:mod:`pixelseg.medical`). Training instance, panoptic and 3D models and a prediction
service are planned, not yet available.
"""
