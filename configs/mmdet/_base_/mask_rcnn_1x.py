# Mask R-CNN 1x (12 epochs, 16 images per step) on a vitzoo backbone: mmdet's ResNet-50 Mask R-CNN with the
# backbone replaced, AdamW lr 1e-4 and weight decay 0.05 as in the official RALA / MALA / L2ViT configs.
# A family config sets the backbone's type and arch and the FPN's in_channels.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['vitzoo.detection.mmdet'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
