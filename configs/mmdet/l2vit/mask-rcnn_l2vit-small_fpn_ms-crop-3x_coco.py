_base_ = '../_base_/mask_rcnn_3x.py'
pretrained = 'L2ViT-Small-checkpoint-best-ema.pth'  # official ImageNet-1k release file
model = dict(
    backbone=dict(type='L2ViT', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
