# RetinaNet 1x (12 epochs, 16 images per step) on a vitzoo backbone: mmdet's ResNet-50 RetinaNet with the
# backbone replaced, AdamW lr 1e-4 and weight decay 1e-4 as in the official RALA / MALA / L2ViT configs.
# Three levels from stride 8 and P6/P7 from the last (mmdet's Swin RetinaNet layout). The official RALA/MALA
# configs take all four stages with FPN start_level=1, which computes the same detector but leaves the
# stride-4 output norm without gradient (an error under DDP). A family config sets the backbone's type and
# arch and the FPN's in_channels.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['vitzoo.detection.mmdet'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False),
    neck=dict(start_level=0))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))
