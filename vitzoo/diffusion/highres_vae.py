"""Tiled VAE encode/decode that stream, and a region-wise bicubic resize, for images of any size.

diffusers' ``AutoencoderKL.tiled_decode`` decodes overlapping latent tiles, blends each with the
tile above and to its left, and concatenates everything into one float image: at 16384 x 16384 that
is 3.2 GB, plus the list of tiles. :func:`decode_tiled` runs the same tiles and the same blend, one
row of tiles at a time, and hands each finished band of rows to a sink (a PNG writer, a uint8
canvas), keeping only the bottom strip of the previous row for the next blend. Peak memory is one
row of decoded tiles, whatever the image height; the output equals ``tiled_decode``'s.

:func:`encode_tiled` is the mirror image: it asks a source for each image tile (so the full image
need not exist: the high-resolution pipeline upsamples the previous stage's image region by region
with :func:`resize_region`) and returns the blended latent moments, which are small.

Tile sizes come from the VAE's public attributes (``vae.tile_sample_min_size``,
``vae.tile_latent_min_size``, ``vae.tile_overlap_factor``) unless given.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["decode_tiled", "encode_tiled", "resize_region", "resize_weights", "vae_scale_factor"]


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent pixel: 2^(number of VAE blocks - 1), 8 for every Stable Diffusion VAE."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _tiling(vae: nn.Module, tile_sample_size: Optional[int]) -> tuple[int, int, float]:
    factor = vae_scale_factor(vae)
    if tile_sample_size is None:
        sample, latent = int(vae.tile_sample_min_size), int(vae.tile_latent_min_size)
    else:
        if tile_sample_size % factor:
            raise ValueError(f"tile_sample_size {tile_sample_size} must be a multiple of the VAE factor {factor}")
        sample, latent = tile_sample_size, tile_sample_size // factor
    overlap = float(vae.tile_overlap_factor)
    if int(latent * (1 - overlap)) < 1:
        raise ValueError(f"latent tiles of {latent} with overlap {overlap} do not advance")
    return sample, latent, overlap


def _blend_rows(above: torch.Tensor, tile: torch.Tensor, extent: int) -> None:
    """In place: fade the top rows of ``tile`` in from the bottom rows of ``above`` (diffusers' ``blend_v``)."""
    extent = min(above.shape[2], tile.shape[2], extent)
    if extent:
        ramp = torch.arange(extent, dtype=torch.float64).div(extent).to(tile.dtype).view(1, 1, extent, 1)
        tile[:, :, :extent] = above[:, :, -extent:] * (1 - ramp) + tile[:, :, :extent] * ramp


def _blend_cols(left: torch.Tensor, tile: torch.Tensor, extent: int) -> None:
    """In place: fade the left columns of ``tile`` in from the right columns of ``left`` (``blend_h``)."""
    extent = min(left.shape[3], tile.shape[3], extent)
    if extent:
        ramp = torch.arange(extent, dtype=torch.float64).div(extent).to(tile.dtype).view(1, 1, 1, extent)
        tile[:, :, :, :extent] = left[:, :, :, -extent:] * (1 - ramp) + tile[:, :, :, :extent] * ramp


def _blended_bands(height: int, width: int, tile_size: int, stride: int, extent: int, limit: int,
                   run_tile: Callable[[int, int], torch.Tensor]):
    """Yield (row offset in the output, band, tiles run) for the tile grid over [height, width] input positions.

    ``run_tile(i, j)`` maps the input tile at (i, j) to an output tile; bands are the blended tiles of
    one grid row cropped to ``limit`` and concatenated (diffusers' tiled encode/decode algorithm).
    An input no larger than one tile (``tile_size``, input units) is a single call, as diffusers does not tile it.
    """
    if height <= tile_size and width <= tile_size:
        # one tile holds everything: no grid (diffusers does not tile then either)
        yield 0, run_tile(0, 0), 1
        return
    bottoms: Optional[list[torch.Tensor]] = None
    offset = 0
    for i in range(0, height, stride):
        tiles = [run_tile(i, j) for j in range(0, width, stride)]
        for j, tile in enumerate(tiles):
            if bottoms is not None:
                _blend_rows(bottoms[j], tile, extent)
            if j:
                _blend_cols(tiles[j - 1], tile, extent)
        band = torch.cat([tile[:, :, :limit, :limit] for tile in tiles], dim=3)
        bottoms = [tile[:, :, -extent:].clone() for tile in tiles] if extent else [tile[:, :, :0] for tile in tiles]
        yield offset, band, len(tiles)
        offset += band.shape[2]
        del tiles, tile, band  # before the next row's tiles exist


@torch.no_grad()
def decode_tiled(vae: nn.Module, latents: torch.Tensor, sink: Callable[[int, torch.Tensor], None], *,
                 tile_sample_size: Optional[int] = None, progress: Optional[Callable[[int], None]] = None) -> None:
    """Decode ``latents`` [B, c, h, w] (already divided by the scaling factor) tile row by tile row.

    ``sink(y0, band)`` receives the decoded rows [B, 3, rows, w·8] starting at image row ``y0``, in
    order, values in about [-1, 1]. ``progress(n)`` is called with the number of tiles of each row done.
    """
    sample, latent, overlap = _tiling(vae, tile_sample_size)
    stride = int(latent * (1 - overlap))
    extent = int(sample * overlap)
    dtype = next(vae.parameters()).dtype

    def run_tile(i: int, j: int) -> torch.Tensor:
        tile = latents[:, :, i:i + latent, j:j + latent].to(dtype)
        if vae.post_quant_conv is not None:
            tile = vae.post_quant_conv(tile)
        return vae.decoder(tile)

    for y0, band, tiles in _blended_bands(latents.shape[2], latents.shape[3], latent, stride, extent, sample - extent,
                                          run_tile):
        sink(y0, band)
        if progress is not None:
            progress(tiles)


@torch.no_grad()
def encode_tiled(vae: nn.Module, source: Callable[[int, int, int, int], torch.Tensor], height: int, width: int, *,
                 tile_sample_size: Optional[int] = None,
                 progress: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Encode an image of ``height`` x ``width`` that ``source(y0, y1, x0, x1)`` supplies tile by tile.

    The source returns [B, 3, y1 - y0, x1 - x0] in [-1, 1]. Returns the latent moments
    [B, 2c, height/8, width/8] (mean and log-variance, as ``vae.quant_conv`` emits them) for a
    ``DiagonalGaussianDistribution``; equal to diffusers' ``_tiled_encode`` of the whole image.
    """
    sample, latent, overlap = _tiling(vae, tile_sample_size)
    stride = int(sample * (1 - overlap))
    extent = int(latent * overlap)
    dtype = next(vae.parameters()).dtype

    def run_tile(i: int, j: int) -> torch.Tensor:
        tile = source(i, min(i + sample, height), j, min(j + sample, width)).to(dtype)
        moments = vae.encoder(tile)
        return vae.quant_conv(moments) if vae.quant_conv is not None else moments

    bands = []
    for _, band, tiles in _blended_bands(height, width, sample, stride, extent, latent - extent, run_tile):
        bands.append(band)
        if progress is not None:
            progress(tiles)
    return torch.cat(bands, dim=2)


def _bicubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with Pillow's a = -0.5."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(in_size: int, out_size: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's BICUBIC resampling taps for output positions [start, stop) of an axis.

    Returns ``(index, weights)``, both [stop - start, K]: output ``k`` is Σ_t weights[k, t] ·
    input[index[k, t]]. As Pillow does, the window is clipped at the image border and the weights
    renormalised (no edge replication); unused taps carry weight 0.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    centers = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * scale
    low = torch.floor(centers - support + 0.5).clamp(min=0).long()
    high = torch.floor(centers + support + 0.5).clamp(max=in_size).long()
    taps = int((high - low).max())
    index = low[:, None] + torch.arange(taps)[None, :]
    weights = _bicubic((index.double() - centers[:, None] + 0.5) / filter_scale) * (index < high[:, None])
    weights = weights / weights.sum(dim=1, keepdim=True)
    return index.clamp(max=in_size - 1), weights


def _fixed_point(weights: torch.Tensor) -> torch.Tensor:
    """Pillow's 8-bit coefficients: weight x 2^22, rounded half away from zero."""
    scaled = weights * _ONE
    return torch.where(scaled < 0, torch.trunc(scaled - 0.5), torch.trunc(scaled + 0.5)).long()


def _apply(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ value · weight in Pillow's fixed point, rounded and clipped to 8 bits (its ``clip8``)."""
    return torch.div((values * weights).sum(-1) + _ONE // 2, _ONE, rounding_mode="floor").clamp(0, 255)


_ONE = 1 << 22  # Pillow's PRECISION_BITS for 8-bit images


def resize_region(image: torch.Tensor, size: tuple[int, int], rows: tuple[int, int],
                  cols: tuple[int, int]) -> torch.Tensor:
    """Rows [y0, y1) and columns [x0, x1) of ``image`` resized to ``size`` = (H, W), as Pillow's BICUBIC.

    Args:
        image: uint8 images [B, C, h, w].
        size: the (H, W) the whole image is resized to.
        rows: output row range.
        cols: output column range.

    Returns:
        float32 [B, C, y1 - y0, x1 - x0] holding integers in [0, 255]: exactly the same region of
        ``PIL.Image.resize(size, BICUBIC)``, whose two passes (horizontal, then vertical, each in 22-bit
        fixed point and rounded to 8 bits) are reproduced in integer arithmetic.
    """
    height, width = image.shape[-2:]
    index_y, weights_y = resize_weights(height, size[0], *rows)
    index_x, weights_x = resize_weights(width, size[1], *cols)
    first, last = int(index_y.min()), int(index_y.max()) + 1
    region = _apply(image[:, :, first:last].long()[..., index_x], _fixed_point(weights_x))  # [B, C, rows, x1 - x0]
    region = _apply(region[:, :, index_y - first].permute(0, 1, 4, 2, 3), _fixed_point(weights_y))  # [B, C, nx, ny]
    return region.transpose(-2, -1).float()
