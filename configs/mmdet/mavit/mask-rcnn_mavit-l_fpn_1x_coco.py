_base_ = '../_base_/mask_rcnn_1x.py'
pretrained = 'MAViT_L.pth'  # official ImageNet-1k file, name not listed (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='MALA', arch='l', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
optim_wrapper = dict(type='AmpOptimWrapper')
