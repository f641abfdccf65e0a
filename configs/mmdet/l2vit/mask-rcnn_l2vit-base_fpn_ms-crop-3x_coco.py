_base_ = '../_base_/mask_rcnn_3x.py'
pretrained = 'L2ViT-Base-checkpoint-best-ema.pth'  # official ImageNet-1k release file
model = dict(
    backbone=dict(type='L2ViT', arch='base', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
