"""ViLBERT's region-feature detector: the Visual Genome ResNeXt-152 32x8d FPN Faster R-CNN of
vqa-maskrcnn-benchmark, as the feature extraction of vilbert-multi-task ran it, in plain PyTorch.

Modules: ``config`` (the yacs MODEL keys this architecture reads), ``backbone`` (ResNeXt body with
frozen batch norm), ``fpn`` (feature pyramid), ``rpn`` (anchors, head, proposals), ``box_head`` (level
mapping, ROIAlign, fc6/fc7, classifier), ``model`` (the assembled network), ``preprocess`` (BGR, mean,
resize, padding), ``extraction`` (per-class NMS and the 100 kept regions), ``loading`` (the checkpoint),
``cache`` (features kept per image content and detector) and ``parity`` (stage-by-stage comparison with
outputs of the original code).
"""
