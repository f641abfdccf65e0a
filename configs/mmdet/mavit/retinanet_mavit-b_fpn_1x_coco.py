_base_ = '../_base_/retinanet_1x.py'
pretrained = 'MAViT_B.pth'  # official ImageNet-1k file, name not listed (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='MALA', arch='b', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
