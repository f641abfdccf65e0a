_base_ = '../_base_/mask_rcnn_3x.py'
pretrained = 'RAVLT_S.pth'  # official ImageNet-1k file (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='RAVLT', arch='s', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
