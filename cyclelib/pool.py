"""The image history buffer of CycleGAN (Shrivastava et al. 2017).

The discriminators see a mix of the newest fakes and older ones, so they do not
chase the generator's latest move; this damps oscillation.
"""
from __future__ import annotations

import torch


class ImagePool:
    """Buffer of up to ``size`` previously generated images, with the official semantics.

    Per image of a queried batch: until the pool holds ``size`` images, store it and
    return it; afterwards, with probability 0.5 return a random stored image and put
    the new one in its place, else return the new image. ``size=0`` disables the pool.

    The pool draws from its own ``torch.Generator`` so that its decisions are part
    of :meth:`state_dict` and a resumed run makes exactly the same ones.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []  # each [C, H, W], detached
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch [N, C, H, W] drawn from the history for ``images`` [N, C, H, W]."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) > 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [im.cpu() for im in self.images],
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise ValueError(f"checkpoint pool size {state['size']} != configured pool size {self.size}")
        self.images = [im.to(device) for im in state["images"]]
        self.generator.set_state(state["generator"])
