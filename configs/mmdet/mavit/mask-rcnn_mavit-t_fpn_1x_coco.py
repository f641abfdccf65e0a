_base_ = '../_base_/mask_rcnn_1x.py'
pretrained = 'MAViT_T.pth'  # official ImageNet-1k file, name not listed (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='MALA', arch='t', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
