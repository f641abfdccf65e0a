"""The Triton kernels of the linear-attention core: values and gradients against the naive reference, half precision
without overflow, strided inputs, the op's registration, and the mixers through the dispatch in ``linear_attention``.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1) on the CPU. The interpreter must be on
before Triton is first imported (``triton.language``'s own jit functions are made then), and other tests of a worker
may have imported it already, so these checks run in one fresh interpreter started by the ``interpreted`` fixture and
each test asserts on its check's outcome. With CUDA, the ``*_on_cuda`` tests run the same checks on the GPU, plus
what the interpreter cannot show: fake-tensor propagation and ``torch.compile(fullgraph=True)`` through the op.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import traceback

import pytest
import torch

import vitzoo
from vitzoo import ops
from vitzoo.ops import linear_attention, linear_attention_naive

pytest.importorskip("triton")

SHAPES = {"square": (2, 3, 70, 70, 16, 16), "odd-widths": (1, 2, 130, 200, 24, 40), "one-query": (1, 1, 1, 65, 8, 3),
          "more-queries": (2, 2, 300, 50, 32, 32)}
MIXERS = ["linear", "lit", "linfusion", "mala", "rala"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU runs the interpreter tests)")


def _kernel(*args, **kwargs):
    from vitzoo.ops.linear_attention_triton import linear_attention_triton

    return linear_attention_triton(*args, **kwargs)


def _inputs(batch, heads, queries, tokens, dim, dim_v, device="cpu", dtype=torch.float32, offset=0.0):
    q = (torch.rand(batch, heads, queries, dim, device=device) + offset).to(dtype).requires_grad_()
    k = (torch.rand(batch, heads, tokens, dim, device=device) + offset).to(dtype).requires_grad_()
    v = (torch.randn(batch, heads, tokens, dim_v, device=device) + offset).to(dtype).requires_grad_()
    return q, k, v


def check_values_and_gradients(shape, normalize, device="cpu"):
    q, k, v = _inputs(*SHAPES[shape], device=device)
    out = _kernel(q, k, v, normalize=normalize)
    expected = linear_attention_naive(q, k, v, normalize=normalize)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=2e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, (q, k, v), grad)
    for name, a, b in zip("qkv", got, want):  # gradients sum over up to 300 tokens: fp32 rounding of their scale
        torch.testing.assert_close(a, b, atol=2e-6 * max(1.0, b.abs().max().item()), rtol=2e-5,
                                   msg=lambda m, name=name: f"d{name}: {m}")


def check_strided_views(device="cpu"):
    """q, k, v as the mixers hand them over: head views of one [B, N, 3·C] projection, no copy made."""
    batch, tokens, heads, dim = 2, 90, 2, 16
    qkv = torch.rand(batch, tokens, 3 * heads * dim, device=device)
    q, k, v = (t.view(batch, tokens, heads, dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    assert not q.is_contiguous()
    torch.testing.assert_close(_kernel(q, k, v), linear_attention_naive(q, k, v), atol=2e-6, rtol=2e-5)


def check_half_precision(dtype_name, device="cpu"):
    """Keys and values around 30 over 4,096 tokens: Σ_j k_j v_jᵀ is about 3.7e6, beyond fp16's 65,504. The kernels
    keep the state in fp32: outputs and gradients are finite and as close to the fp32 reference as the PyTorch form
    in the same dtype is (within twice its error plus one unit of the dtype; the normalised output is invariant to
    the scale of q, so dq is a small difference of large terms and carries the largest relative error in both)."""
    dtype = getattr(torch, dtype_name)
    q, k, v = _inputs(1, 1, 256, 4096, 16, 16, device=device, dtype=dtype, offset=30.0)
    reference = [t.detach().float().requires_grad_() for t in (q, k, v)]
    expected = linear_attention_naive(*reference)
    grad = torch.randn_like(expected).to(dtype)  # every path gets the same rounded gradient
    want = [expected, *torch.autograd.grad(expected, reference, grad.float())]
    previous = ops.get_backend()
    ops.set_backend("torch")
    try:
        pytorch_inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        pytorch_out = linear_attention(*pytorch_inputs)
        pytorch = [pytorch_out, *torch.autograd.grad(pytorch_out, pytorch_inputs, grad)]
    finally:
        ops.set_backend(previous)
    out = _kernel(q, k, v)
    got = [out, *torch.autograd.grad(out, (q, k, v), grad)]
    unit = torch.finfo(dtype).eps
    for name, a, b, c in zip(["out", "dq", "dk", "dv"], got, pytorch, want):
        assert a.dtype == dtype and torch.isfinite(a).all(), name
        scale = c.abs().max()
        error, pytorch_error = (a.float() - c).abs().max(), (b.float() - c).abs().max()
        assert error <= 2 * pytorch_error + unit * scale, f"{name}: error {error:.3g}, PyTorch form {pytorch_error:.3g}"


def check_registration(device="cpu"):
    """torch.library.opcheck: the schema and the registered autograd formula (and, on CUDA, the fake-tensor
    propagation that torch.compile traces with; the interpreter runs the kernels even on fake tensors)."""
    q, k, v = _inputs(1, 2, 40, 40, 16, 16, device=device)
    _kernel(q, k, v)  # registers the ops
    utils = ("test_schema", "test_autograd_registration") + (("test_faketensor",) if device == "cuda" else ())
    torch.library.opcheck(torch.ops.vitzoo.linear_attention_core.default, (q, k, v, True, 1e-6), test_utils=utils)


def check_too_wide(device="cpu"):
    from vitzoo.ops.linear_attention_triton import MAX_HEAD_DIM

    q, k, v = _inputs(1, 1, 8, 8, MAX_HEAD_DIM + 1, 4, device=device)
    with pytest.raises(ValueError, match="head widths up to 128"):
        _kernel(q, k, v)


def check_mixer(name, device="cpu"):
    """A mixer built on linear_attention gives the same output through the kernels as with backend "torch", which
    never uses them. On CUDA the dispatch takes the kernels by itself; on the CPU the tensors are sent on purpose."""
    module = importlib.import_module("vitzoo.ops.linear_attention")  # the package attribute is the function
    calls = []
    kernel, dispatch = module.linear_attention_triton, module.use_triton
    module.linear_attention_triton = lambda *a, **kw: calls.append(1) or kernel(*a, **kw)
    mixer = vitzoo.create_mixer(name, 32, 2).to(device).eval()
    x, size = torch.randn(2, 48, 32, device=device), (6, 8)
    previous = ops.get_backend()
    try:
        ops.set_backend("torch")
        expected = mixer(x, size)
        ops.set_backend("auto")
        if device == "cpu":
            module.use_triton = lambda tensor: True
        out = mixer(x, size)
    finally:
        ops.set_backend(previous)
        module.linear_attention_triton, module.use_triton = kernel, dispatch
    assert calls, "the kernels were not called"
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


CHECKS = {
    **{f"values[{shape}-{normalize}]": (check_values_and_gradients, (shape, normalize))
       for shape in SHAPES for normalize in (True, False)},
    "strided": (check_strided_views, ()),
    "float16": (check_half_precision, ("float16",)),
    "bfloat16": (check_half_precision, ("bfloat16",)),
    "registration": (check_registration, ()),
    "too-wide": (check_too_wide, ()),
    **{f"mixer[{name}]": (check_mixer, (name,)) for name in MIXERS},
}


def run_checks() -> dict:
    """Every check on the CPU in this process, which must have started with TRITON_INTERPRET=1: {name: traceback or
    None}."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    results = {}
    for name, (check, args) in CHECKS.items():
        torch.manual_seed(0)
        try:
            check(*args)
            results[name] = None
        except Exception:  # noqa: BLE001 - reported back to the test that owns the check
            results[name] = traceback.format_exc()
    return results


@pytest.fixture(scope="module")
def interpreted():
    """{check: None if it passed, else its traceback}, from one run of every check under the interpreter."""
    code = f"import json, {__name__} as checks\nprint(json.dumps(checks.run_checks()))\n"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CHECKS))
def test_kernels_in_the_interpreter(interpreted, name):
    assert interpreted[name] is None, interpreted[name]


@cuda
@pytest.mark.parametrize("name", list(CHECKS))
def test_kernels_on_cuda(name):
    check, args = CHECKS[name]
    torch.manual_seed(0)
    check(*args, device="cuda")


@cuda
def test_compile_traces_through_the_kernels_on_cuda():
    """torch.compile(fullgraph=True) of a mixer on CUDA: no graph break at the op, the same output and gradients."""
    mixer = vitzoo.create_mixer("linear", 64, 4).cuda()
    x = torch.randn(2, 256, 64, device="cuda", requires_grad=True)
    compiled = torch.compile(mixer, fullgraph=True)
    out, expected = compiled(x, (16, 16)), mixer(x, (16, 16))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0],
                               atol=1e-5, rtol=1e-5)


def test_the_dispatch_keeps_cpu_tensors_on_the_pytorch_form(monkeypatch):
    """Without CUDA tensors ``linear_attention`` never reaches the kernels, whatever the backend."""
    module = importlib.import_module("vitzoo.ops.linear_attention")
    monkeypatch.setattr(module, "linear_attention_triton", lambda *a, **kw: pytest.fail("kernel called on the CPU"))
    q, k, v = (torch.rand(1, 2, 10, 8) for _ in range(3))
    torch.testing.assert_close(ops.linear_attention(q, k, v), linear_attention_naive(q, k, v), atol=1e-6, rtol=1e-5)


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend("triton-please")
