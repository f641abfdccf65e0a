_base_ = '../_base_/mask_rcnn_1x.py'
pretrained = 'RAVLT_T.pth'  # official ImageNet-1k file (configs/mmdet/README.md)
model = dict(
    backbone=dict(type='RAVLT', arch='t', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(type='AmpOptimWrapper')
