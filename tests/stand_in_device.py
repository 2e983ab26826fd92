"""A stand-in accelerator for CPU-only machines: whole commands run with their tensors "on another device".

A GPU run fails where a tensor made on the CPU (an index, a mask, a label vector, a buffer) meets one on the GPU.
CPU-only CI cannot see those failures, and PyTorch's ``meta`` device holds no values, so it stops at the first host
read (a metric, ``.item()``). Here every tensor sent to the stand-in device is a CPU tensor wrapped in
``OnDevice``, which reports ``device='meta'`` and holds real values; each operation unwraps, computes on the CPU
and wraps its results again, after checking what CUDA checks: an operation given tensors on both devices fails
("Expected all tensors to be on the same device"), except for 0-dim CPU tensors (scalars, which CUDA accepts), CPU
index tensors in advanced indexing (which CUDA moves) and a packed sequence's lengths and batch sizes (which CUDA
wants on the CPU). ``.cpu()``, ``.item()`` and ``.tolist()`` read values back as on a GPU, and ``.numpy()`` of a
device tensor fails as it does there.

The device is labelled ``meta`` (not ``cuda``) because autograd asks the device's runtime for a stream, and a
CPU-only build has no CUDA runtime to ask; the code under test therefore takes its non-CUDA branches. The bf16
autocast ones run on the CPU's autocast in ``tests/engine/test_mixed_precision.py``; CUDA's own calls (RNG state,
synchronize, CUDA graphs) are left to ``benchmarks/gpu_check.py`` on real hardware. What this checks is placement:
every tensor a command creates lives where the tensors it meets live.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import _get_current_function_mode_stack
from torch.utils._device import DeviceContext
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")
CPU = torch.device("cpu")
aten = torch.ops.aten

# outputs a CUDA operation leaves on the CPU: a packed sequence's batch sizes
_CPU_OUTPUTS = {aten._pack_padded_sequence.default: {1}}

# CUDA takes CPU tensors past the first argument here: index tensors (it copies them over), a packed sequence's
# lengths and batch sizes (which must be on the CPU); every other operation wants one device
_CPU_ARGUMENTS_ALLOWED = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                          aten._index_put_impl_.default, aten._pack_padded_sequence.default,
                          aten._pad_packed_sequence.default, aten.lstm.data, aten.gru.data, aten.rnn_tanh.data,
                          aten.rnn_relu.data}


# the torch entry points the stand-in replaces, as they are (captured at import, before any patch)
_PLAIN = {(torch.Tensor, "to"): torch.Tensor.to, (torch.Tensor, "numpy"): torch.Tensor.numpy,
          (torch.Tensor, "new_tensor"): torch.Tensor.new_tensor, (torch, "tensor"): torch.tensor,
          (torch, "as_tensor"): torch.as_tensor}


class DeviceMismatch(RuntimeError):
    pass


class OnDevice(torch.Tensor):
    """A CPU tensor (``elem``) that says it lives on the stand-in device."""

    elem: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl  # no re-wrapping of results by Tensor's default

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(cls, elem.size(), strides=elem.stride(),
                                                storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    @property
    def is_meta(self) -> bool:  # it holds values: load_state_dict copies into it (it skips real meta tensors)
        return False

    @property
    def data(self) -> OnDevice:  # a detached alias of the values, on the device (Torch-Pruning reads weight.data)
        return OnDevice(self.elem.detach())

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        if not isinstance(value, OnDevice):
            raise DeviceMismatch(f"stand-in device: .data = a cpu tensor {tuple(value.shape)} on a device tensor")
        self.elem = value.elem
        _follow(self)

    # C++ indexing turns a list index into a tensor on the indexed tensor's device with Python dispatch off (a
    # value-less meta tensor here): give it a CPU index tensor instead, which CUDA takes as well
    def __getitem__(self, index):
        return torch.Tensor.__getitem__(self, _lists_to_tensors(index))

    def __setitem__(self, index, value):
        torch.Tensor.__setitem__(self, _lists_to_tensors(index), value)

    def tolist(self):
        return self.elem.tolist()

    def __reduce_ex__(self, protocol):  # torch.save of a device tensor, read back with map_location="cpu"
        return self.elem.__reduce_ex__(protocol)

    def __repr__(self):
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _lists_to_tensors(index):
    if isinstance(index, list):
        return torch.tensor(index) if index else torch.zeros(0, dtype=torch.long)
    if isinstance(index, tuple):
        return tuple(_lists_to_tensors(i) for i in index)
    return index


def _on_device(device) -> bool:
    return isinstance(device, torch.device) and device.type == DEVICE.type  # aten operations get torch.device


def _unwrap(value):
    return value.elem if isinstance(value, OnDevice) else value


def _wrap(value):
    return OnDevice(value) if type(value) is torch.Tensor else value


def _devices(func, args, kwargs) -> set[str]:
    found = set()
    for i, t in enumerate(tree_flatten((args, kwargs))[0]):
        if isinstance(t, OnDevice):
            found.add("device")
        elif isinstance(t, torch.Tensor) and t.device.type == DEVICE.type:
            raise RuntimeError(f"stand-in device: {func} met a value-less {DEVICE} tensor; a constructor bypassed "
                               f"the stand-in (patch it in stand_in_device)")
        elif isinstance(t, torch.Tensor) and t.dim() > 0 and not (func in _CPU_ARGUMENTS_ALLOWED and i > 0):
            found.add("cpu")
    return found


def _target(func, args, kwargs):
    """The device a ``to``/``_to_copy``/factory call asks for: its ``device`` keyword or positional argument."""
    if "device" in kwargs:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, torch.device):
            return a
    return None


def _dispatch(func, args, kwargs):
    if func is aten.copy_.default:  # dst.copy_(src) copies across devices
        _unwrap(args[0]).copy_(_unwrap(args[1]), *args[2:])
        return args[0]
    found = _devices(func, args, kwargs)
    if found == {"device", "cpu"}:
        shapes = [f"{'device' if isinstance(t, OnDevice) else 'cpu'}{tuple(t.shape)}"
                  for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, "
                             f"{DEVICE} and cpu! ({func}: {', '.join(shapes)})")
    target = _target(func, args, kwargs)
    to_device = _on_device(target) if target is not None else "device" in found
    if not found & {"device"} and not to_device:  # CPU work (measurement, export, quantization): as it is
        return func(*args, **kwargs)  # only the mode sees tensor-free or CPU-only calls; it is off in here
    args = tuple(CPU if _on_device(a) else a for a in args)
    kwargs = {k: (CPU if k == "device" and _on_device(v) else v) for k, v in kwargs.items()}
    plain_args, plain_kwargs = tree_map(_unwrap, args), tree_map(_unwrap, kwargs)
    with _disable_current_modes():
        out = func(*plain_args, **plain_kwargs)
    if not to_device:
        return out
    if args and isinstance(args[0], OnDevice) and out is plain_args[0]:  # in-place: the same wrapper back
        _follow(args[0])
        return args[0]
    if func in _CPU_OUTPUTS:
        return type(out)(o if i in _CPU_OUTPUTS[func] else _wrap(o) for i, o in enumerate(out))
    if torch.is_inference_mode_enabled() and _views_a_normal_tensor(func, args):
        # under inference_mode a view of a normal tensor (a model's buffer sliced in its forward) is a normal
        # tensor that shares its base's version counter; a wrapper made here would be an inference tensor
        with torch.inference_mode(False):
            return tree_map(_wrap, out)
    return tree_map(_wrap, out)


def _views_a_normal_tensor(func, args) -> bool:
    returns = func._schema.returns
    aliases = bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
    return aliases and bool(args) and isinstance(args[0], OnDevice) and not args[0].is_inference()


def _follow(wrapper: OnDevice) -> None:
    """An in-place view change (``squeeze_``, ``t_``, ``resize_``) of the values, made on the wrapper too: the
    caller keeps the wrapper, not what the operation returns. The wrapper's own (meta) kernel updates its shape."""
    elem = wrapper.elem
    if wrapper.shape != elem.shape or wrapper.stride() != elem.stride():
        with torch._C._DisableTorchDispatch():
            aten.as_strided_.default(wrapper, elem.size(), elem.stride(), elem.storage_offset())


class _StandInMode(TorchDispatchMode):
    """Sees the factories (``torch.zeros(..., device=...)``) and copies of plain tensors to the device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _to(self, *args, **kwargs):
    # Tensor.to checks in C++ that the target device's runtime exists before it dispatches: route around it
    copy = kwargs.pop("copy", False)
    device, dtype, _non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    here, there = isinstance(self, OnDevice), (_on_device(device) if device is not None else isinstance(self, OnDevice))
    if not here and not there:
        return _PLAIN[(torch.Tensor, "to")](self, *args, copy=copy, **kwargs)
    if here == there and dtype in (None, self.dtype) and memory_format in (None, torch.preserve_format) and not copy:
        return self
    options = {"dtype": dtype or self.dtype, "device": DEVICE if there else CPU}
    if memory_format is not None:
        options["memory_format"] = memory_format
    return aten._to_copy.default(self, **options)


def _context_device() -> torch.device | None:
    """The device of an enclosing ``with torch.device(...)``, if any (Module constructors rely on it); found as
    ``torch.get_default_device`` finds it, which itself calls ``torch.tensor``."""
    contexts = [m for m in _get_current_function_mode_stack() if isinstance(m, DeviceContext)]
    if contexts:
        return torch.device(contexts[-1].device)
    context = getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None)
    return torch.device(context.device) if context is not None else None


def _from_data(make):
    """``torch.tensor``-like constructors build their tensor in C++ with Python dispatch off, where a device tensor
    would be a real (value-less) meta tensor: build it on the CPU and send it over."""
    def build(data, *args, device=None, **kwargs):
        target = torch.device(device) if device is not None else _context_device()
        if not _on_device(target):
            return make(data, *args, device=device, **kwargs)
        requires_grad = kwargs.pop("requires_grad", False)
        return _to(make(data, *args, device=CPU, **kwargs), DEVICE).requires_grad_(requires_grad)
    return build


def _new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    device = self.device if device is None else torch.device(device)
    out = _PLAIN[(torch.Tensor, "new_tensor")](self, data, dtype=dtype or self.dtype, device=CPU, requires_grad=False)
    return (_to(out, DEVICE) if _on_device(device) else out).requires_grad_(requires_grad)


def _numpy(self, *args, **kwargs):
    if isinstance(self, OnDevice):
        raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        f"to host memory first.")
    return _PLAIN[(torch.Tensor, "numpy")](self, *args, **kwargs)


def _patches() -> list[tuple[object, str, object]]:
    """(owner, name, stand-in) of every torch entry point the stand-in replaces."""
    return [(torch.Tensor, "to", _to), (torch.Tensor, "numpy", _numpy), (torch.Tensor, "new_tensor", _new_tensor),
            (torch, "tensor", _from_data(_PLAIN[(torch, "tensor")])),
            (torch, "as_tensor", _from_data(_PLAIN[(torch, "as_tensor")]))]


@contextlib.contextmanager
def _plain_torch():
    """PyTorch as it is, inside the stand-in: no dispatch mode, the original entry points."""
    patched = [(owner, name, getattr(owner, name)) for owner, name, _ in _patches()]
    for owner, name, _ in patched:
        setattr(owner, name, _PLAIN[(owner, name)])
    try:
        with _disable_current_modes():
            yield
    finally:
        for owner, name, value in patched:
            setattr(owner, name, value)


def _outside(load):
    """``load`` as it runs without the stand-in: Hugging Face builds a pretrained model on the real meta device,
    then fills it (the model is moved to the device afterwards, as on a GPU)."""
    def build(*args, **kwargs):
        with _plain_torch():
            return load(*args, **kwargs)
    return build


@contextlib.contextmanager
def stand_in_device(monkeypatch):
    """Within: tensors sent to ``DEVICE`` hold values and check placement as on CUDA (see the module's text)."""
    from curridistill.models import hf, text
    for module in (hf, text):
        monkeypatch.setattr(module, "load_encoder", _outside(hf.load_encoder))
    # the exporters trace the model (on the CPU, where export moves it) under dispatch modes of their own
    monkeypatch.setattr(torch.onnx, "export", _outside(torch.onnx.export))
    monkeypatch.setattr(torch.jit, "trace", _outside(torch.jit.trace))
    for owner, name, value in _patches():
        monkeypatch.setattr(owner, name, value)
    with _StandInMode():
        yield DEVICE
