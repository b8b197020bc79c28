"""DeepSTORM: camera frames -> KDE on a 4x upsampled grid (paper section 2.2).

The paper's simplified 2D DeepSTORM has three modules:

1. multi-scale context aggregation: dilated 3x3 convolutions at camera resolution,
2. upsampling: two 2x resize-convolutions (nearest-neighbour resize, then a convolution),
3. prediction: three convolution blocks at the KDE resolution, ending in an element-wise
   HardTanh.

The HardTanh floor (-1) is exactly the value of empty KDE pixels, so a network whose
outputs start at or below it gets no gradient on almost every pixel and collapses to a
constant (docs/conventions.md, "Traps seen here"). The clamp is therefore applied at inference only:
in training mode ``forward`` returns the raw output and the loss sees the linear range.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn import functional as F

from ..simulation.camera import PAPER_CAMERA, Camera
from .precision import use_bf16
from .regions import SpotWindows, predict_windows


def _block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


_TRACE_LOCK = threading.Lock()  # tracing patches global TorchScript state: one build at a time per process


class _Clamped(nn.Module):
    """``net(x, clamp=True)`` as a module of one argument (what ``torch.jit.trace`` records)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, clamp=True)


class DeepSTORM(ModelMixin, ConfigMixin):
    """Frames in ADU -> KDE estimate in the networks' [-1, 1] scale (``KDEScaling``).

    Parameters
    ----------
    context_channels : int
        Width of the context-aggregation module (camera resolution).
    dilations : tuple of int
        Dilation of each residual 3x3 block of the context module; the receptive field
        grows by ``2 * d`` pixels per block.
    upsample_channels : tuple of int
        Output widths of the two 2x resize-convolutions.
    prediction_channels : int
        Width of the prediction module (KDE resolution).
    upsampling : int
        Must be 4 (two 2x stages), kept in the config for readers of the KDE grid.
    clamp_range : (float, float)
        HardTanh bounds applied at inference.
    camera_offset, camera_gain, read_noise : float
        Camera model used to turn ADU into photo-electrons (overridable per call).
    input_scale : float
        Divisor of the variance-stabilized frame, see :meth:`normalize`.
    kde_sigma : float
        Kernel width (upsampled pixels) of the KDE targets the network was trained on.
    pixel_size_nm : float
        Camera pixel size of the training data.
    psf_sigma_px : float
        PSF width (camera pixels) of the training data (informational; used by the app).
    head : {"resize_conv", "pixel_shuffle"}
        How the camera-resolution features become the 4x KDE. ``"resize_conv"`` is the
        paper's: two 2x nearest-neighbour resize-convolutions (``upsample_channels``), then
        three convolutions at the KDE resolution (``prediction_channels``).
        ``"pixel_shuffle"`` is a sub-pixel head (ESPCN, Shi et al. 2016): a 3x3 convolution
        to ``head_channels`` and a 1x1 convolution to 16 channels at camera resolution,
        rearranged into the 4x grid by ``nn.PixelShuffle(4)``; no convolution runs at the KDE
        resolution, so it costs several times less.
    head_channels : int
        Width of the sub-pixel head's 3x3 convolution.
    out_channels : int
        1: the KDE. 2 (a network for a 3D PSF): the KDE and its z channel, the KDE weighted by
        ``z / z_scale_nm`` over the kernel's peak (:func:`smlm_diffusers.training.data.z_channel`;
        :func:`z_at` reads a molecule's z from it).
    z_scale_nm : float, optional
        The z channel's unit (nm), with ``out_channels=2``.
    """

    @register_to_config
    def __init__(
        self,
        context_channels: int = 48,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 4, 2),
        upsample_channels: tuple[int, int] = (32, 16),
        prediction_channels: int = 16,
        upsampling: int = 4,
        clamp_range: tuple[float, float] = (-1.0, 1.0),
        camera_offset: float = PAPER_CAMERA.offset,
        camera_gain: float = PAPER_CAMERA.gain,
        read_noise: float = PAPER_CAMERA.read_noise,
        input_scale: float = 10.0,
        kde_sigma: float = 1.0,
        pixel_size_nm: float = PAPER_CAMERA.pixel_size_nm,
        psf_sigma_px: float = 1.0,
        head: str = "resize_conv",
        head_channels: int = 64,
        out_channels: int = 1,
        z_scale_nm: float | None = None,
    ):
        super().__init__()
        if out_channels not in (1, 2) or (out_channels == 2) != (z_scale_nm is not None):
            raise ValueError("out_channels must be 1, or 2 with z_scale_nm (the z channel's unit) given, "
                             f"got out_channels={out_channels}, z_scale_nm={z_scale_nm}")
        if upsampling != 4:
            raise ValueError("DeepSTORM upsamples by two 2x resize-convolutions: upsampling must be 4")
        if head not in ("resize_conv", "pixel_shuffle"):
            raise ValueError(f"head must be 'resize_conv' or 'pixel_shuffle', got {head!r}")
        c = context_channels
        self.stem = _block(1, c)
        self.context = nn.Sequential(*[_Residual(_block(c, c, d)) for d in dilations])
        if head == "resize_conv":
            u1, u2 = upsample_channels
            self.up1 = _block(c, u1)
            self.up2 = _block(u1, u2)
            p = prediction_channels
            self.prediction = nn.Sequential(_block(u2, p), _block(p, p), nn.Conv2d(p, out_channels, 1))
        else:
            r = upsampling
            self.prediction = nn.Sequential(_block(c, head_channels), nn.Conv2d(head_channels, r * r * out_channels, 1),
                                            nn.PixelShuffle(r))
        out_conv = self.prediction[-1] if head == "resize_conv" else self.prediction[-2]
        # Start on the empty-pixel level (-1). Training sees the unclamped output, so there is
        # gradient everywhere. With a higher start (or zero output weights) the error on the
        # ~98% empty pixels dominates and drives the output weights negative: peaks then stay
        # capped at the bias for hundreds of steps (seen here: flat-topped KDEs at -0.73).
        nn.init.normal_(out_conv.weight, std=0.01)
        nn.init.constant_(out_conv.bias, -1.0)
        with torch.no_grad():  # the z channel starts at 0, its empty level (PixelShuffle: channel c <- c * r^2 ...)
            out_conv.bias[len(out_conv.bias) // out_channels:] = 0.0
        self.legacy_localization: dict = {}

    # Configs saved before the localization settings moved to the pipeline (its threshold,
    # peak_refine, peak_window) carry them here. Loading sets them aside, unregistered and
    # without diffusers' "unexpected config attributes" warning, as ``legacy_localization``:
    # the pipeline adopts them where its own config has none (pipelines/settings.py).
    LEGACY_LOCALIZATION_KEYS = ("threshold", "refine", "refine_window")

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        config_dict = {k: v for k, v in config_dict.items() if k not in cls.LEGACY_LOCALIZATION_KEYS}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        legacy = {k: config[k] for k in cls.LEGACY_LOCALIZATION_KEYS if isinstance(config, dict) and k in config}
        out = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        (out[0] if return_unused_kwargs else out).legacy_localization = legacy
        return out

    @property
    def camera(self) -> Camera:
        """The camera of the config: what :meth:`normalize` assumes unless told otherwise."""
        c = self.config
        return Camera(pixel_size_nm=c.pixel_size_nm, offset=c.camera_offset, gain=c.camera_gain,
                      read_noise=c.read_noise)

    # -- input normalization: the one place where ADU become network input ------------------
    def normalize(
        self,
        frames_adu: torch.Tensor,
        offset: float | None = None,
        gain: float | None = None,
        read_noise: float | None = None,
        camera: Camera | None = None,
    ) -> torch.Tensor:
        """ADU frames [B, H, W] or [B, 1, H, W] -> network input [B, 1, H, W].

        ``e = (ADU - offset) / gain`` photo-electrons, then the generalized Anscombe
        transform ``2 sqrt(e + read_noise^2 + 3/8)``, which makes the pixel noise about unit
        variance at any brightness, minus the frame's median (the background level), divided
        by ``input_scale``. It is per frame and independent of the photon and background
        levels, so the network sees SNR, not raw counts.

        ``camera`` (instead of the three numbers) may carry per-pixel maps (an sCMOS,
        :class:`~smlm_diffusers.simulation.camera.Camera`): each pixel's ``e = (ADU - o_k) / g_k``, then
        :func:`shrink_noisy_pixels` (a pixel noisier than the camera's typical read noise is pulled towards what
        its neighbours say, by its reliability), then the transform with the camera's scalar read noise, so
        the network sees frames with the noise it was trained on. A camera without maps, or with maps that
        hold one value, gives the scalar transform exactly.
        """
        cfg = self.config
        x = frames_adu if frames_adu.ndim == 4 else frames_adu.unsqueeze(1)
        if camera is not None:
            xf = x.float()
            e = camera.adu_to_photons(xf)  # per pixel with maps (their shape is checked there)
            if camera.has_maps and camera.maps.variance is not None:
                e = shrink_noisy_pixels(e, camera.read_variance(xf), camera.read_noise**2)
            v = 2.0 * torch.sqrt((e + camera.read_noise**2 + 0.375).clamp_min(0.0))
        else:
            offset = cfg.camera_offset if offset is None else offset
            gain = cfg.camera_gain if gain is None else gain
            read_noise = cfg.read_noise if read_noise is None else read_noise
            e = (x.float() - offset) / gain
            v = 2.0 * torch.sqrt((e + read_noise**2 + 0.375).clamp_min(0.0))
        med = v.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
        return (v - med) / cfg.input_scale

    def forward(self, x: torch.Tensor, clamp: bool | None = None) -> torch.Tensor:
        """Normalized frames [B, 1, H, W] -> KDE [B, out_channels, 4H, 4W] in [-1, 1] units.

        ``clamp`` defaults to ``not self.training``: the HardTanh is applied at inference.
        """
        h = self.context(self.stem(x))
        if self.config.head == "resize_conv":
            h = self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.up2(F.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.prediction(h)
        if clamp if clamp is not None else not self.training:
            out = F.hardtanh(out, *self.config.clamp_range)
        return out

    @torch.no_grad()
    def predict(
        self,
        frames_adu,
        batch_size: int = 64,
        camera: Camera | None = None,
        progress: bool = False,
        mixed_precision: str = "auto",
        compiled: bool | None = None,
        windows: SpotWindows | None = None,
    ) -> torch.Tensor:
        """KDE estimates [F, out_channels, 4H, 4W] (``[-1, 1]`` units, float32) of ADU frames of any size.

        Accepts numpy or torch, [H, W] or [F, H, W], integer or float. ``camera`` overrides
        the offset, gain and read noise of the config (per pixel where it has maps, :meth:`normalize`;
        frames of another shape than its maps are refused). ``mixed_precision="bf16"`` runs the
        convolutions under bfloat16 autocast, ``"no"`` in float32, ``"auto"`` (default) bf16
        only where the device runs it natively (:mod:`~smlm_diffusers.models.precision`). On a
        CPU with AVX512-BF16 (one thread) bf16 gave 13-20 frames/s against 10-12, with Jaccard
        within 0.003 and RMSE within 0.05 nm on every benchmark scenario (``python -m
        benchmarks.run --methods DeepSTORM --plugins benchmarks.model_localizers``, with and
        without ``--option 'DeepSTORM.mixed_precision="no"'``); without it, bf16 is slower.

        ``compiled`` (default: on a CPU in float32) runs :meth:`inference_module`, a frozen
        TorchScript copy with batch norms folded into the convolutions and oneDNN's fused
        convolution + ReLU: the same outputs to about 1e-5, the network about 2x faster on one
        thread (``python -m benchmarks.speed``). ``False`` runs the module as it is.

        ``windows`` (a :class:`~smlm_diffusers.models.regions.SpotWindows`) runs the network only in
        windows around the spots a matched filter sees, on every frame where those windows cover
        less than ``windows.max_fraction`` of it; the rest of such a frame is the empty level
        (:mod:`smlm_diffusers.models.regions`). Default: whole frames.
        """
        # weights loaded in bfloat16 (from_pretrained(torch_dtype=torch.bfloat16)) compute in it whatever the device
        bf16 = use_bf16(mixed_precision, self.device) or self.dtype == torch.bfloat16
        if compiled is None:
            compiled = self.device.type == "cpu" and not bf16
        net = self.inference_module() if compiled else (lambda x: self(x, clamp=True))
        frames = check_frames(frames_adu)
        kwargs = {} if camera is None else {"camera": camera}
        was_training = self.training
        self.eval()
        out = []
        batches = range(0, frames.shape[0], batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="DeepSTORM", unit="batch")
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        for start in batches:
            x = self.normalize(frames[start : start + batch_size].to(self.device), **kwargs)
            x = x.contiguous(memory_format=torch.channels_last)  # oneDNN: about 1.4x faster on CPU
            with torch.no_grad(), autocast:
                if windows is None:
                    out.append(net(x).float().cpu())
                else:
                    empty = (self.config.clamp_range[0],) + (0.0,) * (self.config.out_channels - 1)
                    kde, _ = predict_windows(net, x, 1.0 / self.config.input_scale, windows,
                                             self.config.upsampling, empty)
                    out.append(kde.float().cpu())
        self.train(was_training)
        return torch.cat(out, dim=0)

    def inference_module(self) -> torch.jit.ScriptModule:
        """``self(x, clamp=True)`` in evaluation mode as a frozen, inference-optimized TorchScript module
        (``torch.jit.optimize_for_inference``: batch norm folded, convolution + ReLU fused), for
        channels-last float32 input [B, 1, H, W] of any size. Built on first use and again whenever
        a parameter or buffer changes (training, ``load_state_dict``, ``to``)."""
        tensors = [*self.parameters(), *self.buffers()]
        key = (self.device, tuple((t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_inference_cache")  # not a submodule: never in the state dict
        if cached is not None and cached[0] == key:
            return cached[1]
        was_training = self.training
        self.eval()
        example = torch.zeros(1, 1, 16, 16, device=self.device).contiguous(memory_format=torch.channels_last)
        with _TRACE_LOCK, torch.no_grad(), warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.compile, which needs a C++ toolchain at run time
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_Clamped(self).eval(), example)))
        self.train(was_training)
        self.__dict__["_inference_cache"] = (key, module)
        return module


def shrink_noisy_pixels(e: torch.Tensor, read_var: torch.Tensor, typical: float) -> torch.Tensor:
    """Frames in photo-electrons [B, 1, H, W] with each pixel whose read-noise variance ``read_var`` [H, W] (e-^2)
    exceeds the ``typical`` one pulled towards the inverse-variance weighted mean ``m`` of its 8 neighbours:
    ``e + (1 - a) (m - e)``, ``a = (B + typical) / (B + r_k^2)`` at the frame's background ``B`` (median e).

    A hot pixel (the real sample's reach 445 e-^2 against a typical 1.3) is then about as noisy as the others,
    and light on it is read from its neighbours, as the PSF's smoothness allows: the network, trained on one
    uniform camera, sees neither spikes nor holes there (measured on frames simulated through the real maps:
    false positives within 2 px of a noisy pixel 40 per 1000 rows, against 84 with a per-pixel Anscombe
    transform and 157 with the offset and gain maps alone). The fits use the exact per-pixel likelihood."""
    level = e.flatten(1).median(dim=1).values.view(-1, 1, 1, 1).clamp_min(0.0)
    spread = level + read_var + 0.375
    weight = 1.0 / spread
    kernel = torch.ones(1, 1, 3, 3, dtype=e.dtype, device=e.device)
    kernel[..., 1, 1] = 0.0
    pad = lambda t: F.pad(t, (1, 1, 1, 1), mode="replicate")  # noqa: E731
    m = F.conv2d(pad(e * weight), kernel) / F.conv2d(pad(weight.expand_as(e)), kernel)
    a = ((level + typical + 0.375) / spread).clamp(max=1.0)  # 1 exactly where read_var is the typical one
    return e + (1.0 - a) * (m - e)


def check_frames(frames) -> torch.Tensor:
    """Validate frames (numpy or torch, [H, W] or [F, H, W]) and return float32 [F, H, W]."""
    if isinstance(frames, np.ndarray):
        if frames.dtype.kind not in "iuf":
            raise TypeError(f"frames must be integer or float, got dtype {frames.dtype}")
        frames = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    elif not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim == 2:
        frames = frames.unsqueeze(0)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [H, W] or [F, H, W], got shape {tuple(frames.shape)}")
    if frames.numel() == 0:
        raise ValueError(f"frames are empty: shape {tuple(frames.shape)}")
    if frames.shape[1] < 4 or frames.shape[2] < 4:
        raise ValueError(f"frames must be at least 4x4 pixels, got {tuple(frames.shape[1:])}")
    frames = frames.float()
    if not torch.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values")
    return frames
