_base_ = '../_base_/mask_rcnn_1x.py'
pretrained = 'RAVLT_B.pth'  # official ImageNet-1k file (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='RAVLT', arch='b', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
