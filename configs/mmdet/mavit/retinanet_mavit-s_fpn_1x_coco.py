_base_ = '../_base_/retinanet_1x.py'
pretrained = 'MAViT_S.pth'  # official ImageNet-1k file, name not listed (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='MALA', arch='s', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
