"""Kernel ops: a ``torch.library`` custom op for torch.compile, a direct call in eager mode.

A custom op costs the host a trip through the dispatcher on every call (its autograd
wrapper, a redispatch, default-argument filling): tens of microseconds, about as much
as launching the Triton kernel itself. A training step calls these ops a few hundred
times, and on a fast GPU the host then falls behind the kernels (the GPU idles between
launches). So :func:`kernel_op` registers the function as a custom op, which is what
torch.compile, export, fake tensors and dispatch modes see, and in plain eager mode
calls the same function directly, through an ``autograd.Function`` built from the same
``setup_context``/``backward`` pair when a backward is registered. Both paths run the
same code and give the same results and gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

# The eager shortcut; False sends every call through the dispatcher (for comparisons).
DIRECT_EAGER_CALLS = True

# Plain eager tensors; anything else (fake, functional, other subclasses) needs the dispatcher.
_PLAIN = (Tensor, torch.nn.Parameter)


class KernelOp:
    """A custom op that eager code calls without the dispatcher. Use as
    ``@kernel_op("seqmamba::name")`` over a function of tensors and plain values that
    returns new tensors: it must not alias its inputs, and may write only into the
    arguments named in ``mutates_args`` (output buffers the caller hands in)."""

    def __init__(self, name: str, fn: Callable[..., Any], mutates_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.fn = fn
        self.op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
        self._function: type[torch.autograd.Function] | None = None
        self.__doc__ = fn.__doc__

    def register_fake(self, fake: Callable[..., Any]) -> Callable[..., Any]:
        return self.op.register_fake(fake)

    def register_autograd(self, backward: Callable[..., Any], *, setup_context: Callable[..., None]) -> None:
        """As ``CustomOpDef.register_autograd``; also builds the eager autograd.Function.
        ``setup_context`` receives every argument positionally, as the op's does."""
        self.op.register_autograd(backward, setup_context=setup_context)
        fn = self.fn

        def forward(ctx: Any, *args: Any) -> Any:
            out = fn(*args)
            setup_context(ctx, args, out)
            return out

        self._function = type(self.name.replace("::", "_"), (torch.autograd.Function,), {
            "forward": staticmethod(forward), "backward": staticmethod(backward),
        })

    def __call__(self, *args: Any) -> Any:
        if not self._direct(args):
            return self.op(*args)
        if self._function is not None and torch.is_grad_enabled() and _any_requires_grad(args):
            return self._function.apply(*args)
        return self.fn(*args)

    @staticmethod
    def _direct(args: tuple) -> bool:
        return (
            DIRECT_EAGER_CALLS
            and not torch.compiler.is_compiling()
            and not is_in_torch_dispatch_mode()
            and all(type(a) in _PLAIN for a in args if isinstance(a, Tensor))
        )


def kernel_op(name: str, mutates_args: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], KernelOp]:
    """Decorator: ``@kernel_op("seqmamba::rms_norm_fwd")`` (see :class:`KernelOp`)."""
    return lambda fn: KernelOp(name, fn, mutates_args)


def _any_requires_grad(args: tuple) -> bool:
    return any(isinstance(a, Tensor) and a.requires_grad for a in args)
