"""SMLMDiffusionPipeline: frames -> DeepSTORM KDE -> conditional DDPM samples -> molecules.

The DDPM models the residual ``r = y - y_hat`` between the true KDE ``y`` and the DeepSTORM
estimate ``y_hat`` (both in the networks' [-1, 1] scale, :class:`~smlm_diffusers.KDEScaling`):
sampling ``r`` instead of ``y`` removes the global background drift an epsilon-DDPM on the KDE
itself showed here (docs/conventions.md, traps). The UNet input is the noisy residual and the
conditioning (:meth:`SMLMDiffusionPipeline.conditioning`), concatenated along channels, in
overlapping tiles of its working grid (:mod:`.tiling`). Localization (peaks, association,
refinement on the frame, sigmas) is :mod:`smlm_diffusers.localization`'s; the remote-code
shims that ``save_pretrained`` writes are :mod:`.remote_code`'s.
"""

from __future__ import annotations

import os

import pandas as pd
import torch
from diffusers import DiffusionPipeline, UNet2DModel

from ..kde import KDEScaling
from ..localization.configurations import ambiguous, arbitrate as arbitrate_configurations
from ..localization.molecules import SPREAD_COLUMNS, deepstorm_molecules
from ..localization.peaks import localize_kde
from ..screening import screen_localizations
from ..models import layout
from ..models.deepstorm import DeepSTORM, check_frames
from ..models.precision import use_bf16
from ..models.regions import SpotWindows
from ..optics import GaussianPSF, Optics
from ..schedulers.scheduling_gamma_ddpm import GammaDDPMScheduler
from ..simulation.camera import Camera
from .ddpm import DDPMSampling
from .modes import CallMode, call_mode
from .pipeline_output import SMLMPipelineOutput
from .remote_code import write_remote_code
from .sampling import NO_DETECTIONS
from .settings import peak_settings
from .tiling import TileLayout

__all__ = ["SMLMDiffusionPipeline", "SPREAD_COLUMNS"]


class SMLMDiffusionPipeline(DDPMSampling, DiffusionPipeline):
    """Uncertainty-aware SMLM: DeepSTORM KDE estimate plus conditional DDPM posterior samples.

    Parameters
    ----------
    kde_net : DeepSTORM
        Frames (ADU) -> KDE estimate; its config holds the camera the model was trained for.
    unet : UNet2DModel, optional
        Denoiser of the residual; its channels say its layout (:mod:`smlm_diffusers.models.layout`):
        the KDE grid (v1, ``out_channels == 1``) or camera pixels on the pixel-unshuffled KDE (v2, 16).
        None: a folder without a DDPM (DeepSTORM mode only; every 3D folder: the DDPM is 2D only).
    scheduler : GammaDDPMScheduler, optional
    optics : dict, optional
        The microscope (:meth:`smlm_diffusers.optics.Optics.to_dict`: camera and PSF) where it is more than
        the network's config says: a 3D PSF makes DeepSTORM mode localize in 3D (:attr:`optics`).
    link_radius_nm : float
        Association radius of detections across samples (per-molecule statistics).
    min_probability : float
        What renders and Jaccard indices keep: molecules of at least this detection probability.
    tile_size, tile_overlap : int
        Largest UNet tile and the margin each tile drops on inner edges, in pixels of the
        UNet's working grid: KDE pixels for a v1 UNet, camera pixels for v2 (:mod:`.tiling`).
    tile_edge : int, optional
        The margin (background padding) of a frame axis that one tile covers, at most
        ``tile_overlap`` (the default): it has no inner seam, only the field's edge, and the
        padding the UNet's training crops reached past their field (``crop_edge_px``) suffices.
    probability_floor : float
        DDPM mode: molecules whose detection probability (the weight of the configurations holding them,
        :mod:`smlm_diffusers.localization.configurations`) is below this floor are left out of the table.
    ambiguity_tile : int
        DDPM mode samples only where DeepSTORM's refined molecules leave the configuration in doubt
        (:func:`~smlm_diffusers.localization.configurations.ambiguous`), in tiles of this many pixels of the
        working grid (``tile_overlap`` of each edge dropped), when that is less work than sampling every tile
        of the frame; the variance is zero where nothing was sampled.
    deepstorm_arbitrate : bool
        DeepSTORM mode also weighs its own split proposals on the frame (the same arbitration, no samples):
        better molecules in dense frames at a few ms per ambiguous cluster. Needs ``refine``.
    default_num_samples : int
        What a call without ``num_samples`` runs (:mod:`.modes`): 0, DeepSTORM mode (with the arbitration
        where ``deepstorm_arbitrate`` is on: the shipped default, as fast as measured best), or DDPM samples.
    default_inference_steps : int
        Reverse diffusion steps when a call does not say (``num_inference_steps=None``).
    refine, refine_split : bool
        Refine every molecule by the joint Poisson maximum-likelihood fit on the frame (paper
        eq. 7) seeded by the KDE positions, in both modes, and whether that fit may split a
        molecule that one emitter explains badly into two (:mod:`smlm_diffusers.localization.refine`).
        Folders saved before refinement existed load with ``refine=False``.
    skip_empty_tiles : bool
        Do not sample tiles whose DeepSTORM estimate stays below a quarter of the detection
        threshold everywhere (their residual is set to zero).
    sparse_windows : bool
        DeepSTORM mode runs the network only around the spots a matched filter sees where they cover
        less than half a frame (:mod:`smlm_diffusers.models.regions`; the same table on sparse frames).
    threshold, peak_refine, peak_window : float, str, int, optional
        KDE peak finding (:func:`~smlm_diffusers.localization.peaks.localize_kde`'s ``threshold``,
        ``refine``, ``window``), tuned by ``train/tune_localization.py``. Where not given, the
        values a kde_net config of a folder saved before they moved here carries
        (``DeepSTORM.legacy_localization``), else ``localize_kde``'s defaults.
    """

    model_cpu_offload_seq = "kde_net->unet"
    _optional_components = ["unet", "scheduler"]

    def __init__(
        self,
        kde_net: DeepSTORM,
        unet: UNet2DModel | None = None,
        scheduler: GammaDDPMScheduler | None = None,
        optics: dict | None = None,
        link_radius_nm: float = 60.0,
        min_probability: float = 0.5,
        tile_size: int = 160,
        tile_overlap: int = 16,
        tile_edge: int | None = None,
        probability_floor: float = 0.1,
        ambiguity_tile: int = 32,
        deepstorm_arbitrate: bool = True,
        default_num_samples: int = 0,
        default_inference_steps: int = 20,
        refine: bool = False,
        refine_split: bool = False,
        skip_empty_tiles: bool = True,
        sparse_windows: bool = True,
        threshold: float | None = None,
        peak_refine: str | None = None,
        peak_window: int | None = None,
        sigma_scale=None, crlb_scale=None, calibration_samples=None, calibration_steps=None, sigma_models=None,
    ):
        # the last five: a fitted sigma model that folders saved before the arbitration of configurations
        # carry; they load and do nothing (the sigma is now a configuration's bound and spread)
        super().__init__()
        if not 0.0 <= probability_floor <= 1.0:
            raise ValueError(f"probability_floor must be between 0 and 1, got {probability_floor}")
        if int(default_num_samples) < 0:
            raise ValueError(f"default_num_samples must be >= 0, got {default_num_samples}")
        if tile_edge is not None and not 0 <= int(tile_edge) <= tile_overlap:
            raise ValueError(f"tile_edge must be between 0 and tile_overlap ({tile_overlap}), got {tile_edge}")
        peaks = peak_settings({"threshold": threshold, "peak_refine": peak_refine, "peak_window": peak_window},
                              getattr(kde_net, "legacy_localization", {}))
        self.register_modules(kde_net=kde_net, unet=unet, scheduler=scheduler)
        self.register_to_config(link_radius_nm=link_radius_nm, min_probability=min_probability,
                                tile_size=tile_size, tile_overlap=tile_overlap,
                                tile_edge=None if tile_edge is None else int(tile_edge),
                                probability_floor=float(probability_floor), ambiguity_tile=int(ambiguity_tile),
                                deepstorm_arbitrate=bool(deepstorm_arbitrate),
                                default_num_samples=int(default_num_samples),
                                default_inference_steps=int(default_inference_steps), refine=bool(refine),
                                refine_split=bool(refine_split), skip_empty_tiles=bool(skip_empty_tiles),
                                sparse_windows=bool(sparse_windows), **peaks)
        if optics is not None:
            self.register_to_config(optics=Optics.from_dict(dict(optics)).to_dict())

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Write ``model_index.json`` plus the shim modules of the remote-code loading path
        (:mod:`.remote_code`); ``save_pretrained`` ends here after saving the components."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        write_remote_code(save_directory)

    # this package's own components, loaded from it (never from the shims in the folder: no remote code runs)
    OWN_COMPONENTS = {"kde_net": "DeepSTORM", "scheduler": "GammaDDPMScheduler"}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> SMLMDiffusionPipeline:
        """Load a pipeline folder, or a Hub repo id (downloaded first, honouring ``HF_HUB_OFFLINE``), with
        diffusers' own loader: its keyword arguments work (``dtype=torch.bfloat16`` or the older ``torch_dtype``,
        ``low_cpu_mem_usage``); others override pipeline settings (``tile_size=...``) or replace components
        (``unet=...``); ``revision``, ``cache_dir`` and ``token`` go to the download.

        No remote code runs: :meth:`load_config` names this package's classes for the folder's components
        and pipeline, whatever the shim modules in the folder say.
        """
        from ..hub import resolve_pretrained

        folder = resolve_pretrained(pretrained_model_name_or_path, revision=kwargs.pop("revision", None),
                                    cache_dir=kwargs.pop("cache_dir", None), token=kwargs.pop("token", None))
        from diffusers.utils import logging as diffusers_logging

        shown = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # no bar for loading a few MB of local components
        try:
            return super().from_pretrained(folder, **kwargs)
        finally:
            if shown:
                diffusers_logging.enable_progress_bar()

    @classmethod
    def load_config(cls, *args, **kwargs):
        """``model_index.json`` as this class and this package's components (module docstring: the shims that
        name ``pipeline_smlm`` / ``deepstorm`` are for ``DiffusionPipeline.from_pretrained(trust_remote_code=True)``)."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if "_class_name" in config:
            config["_class_name"] = cls.__name__
            for name, class_name in cls.OWN_COMPONENTS.items():
                if isinstance(config.get(name), (list, tuple)) and config[name][0] is not None:
                    config[name] = ["smlm_diffusers", class_name]
        return out

    @property
    def kde_scaling(self) -> KDEScaling:
        return KDEScaling(self.kde_net.config.kde_sigma)

    @property
    def optics(self) -> Optics:
        """The microscope: the folder's ``optics`` setting, else the network's camera and Gaussian PSF."""
        given = self.config.get("optics")
        if given is not None:
            return Optics.from_dict(dict(given))
        return Optics(self.kde_net.camera, GaussianPSF(float(self.kde_net.config.psf_sigma_px)))

    def resolve_optics(self, optics: Optics | None = None, camera: Camera | None = None) -> Optics:
        """The optics of a call, resolved once: ``optics`` if given, else the folder's (:attr:`optics`), with
        its camera replaced by ``camera`` if given. Every step of the call sees this one value."""
        resolved = self.optics if optics is None else optics
        return resolved if camera is None else resolved.replace(camera=camera)

    @property
    def camera(self) -> Camera:
        """The camera of the model's config (``kde_net``): what a call assumes unless given ``camera=``."""
        return self.kde_net.camera

    def localize_density(self, kde, pixel_size_nm: float | None = None, threshold: float | None = None,
                         frame_offset: int = 0) -> pd.DataFrame:
        """Localizations (DataFrame in nm) of a KDE in density units with the pipeline's peak
        settings (``localize_kde``); ``pixel_size_nm`` and ``threshold`` default to the configs'."""
        net, c = self.kde_net.config, self.config
        return localize_kde(kde, pixel_size_nm=net.pixel_size_nm if pixel_size_nm is None else pixel_size_nm,
                            upsampling=net.upsampling, threshold=c.threshold if threshold is None else threshold,
                            refine=c.peak_refine, window=c.peak_window, kernel_sigma=net.kde_sigma,
                            frame_offset=frame_offset)

    def conditioning(self, y_hat: torch.Tensor, frames: torch.Tensor, camera: Camera) -> torch.Tensor:
        """UNet conditioning channels in its working layout: the KDE estimate (+ the frame),
        built by :func:`smlm_diffusers.models.layout.condition_channels` as in training."""
        frame_norm = None
        if layout.uses_frame(self.unet.config):
            frame_norm = self.kde_net.normalize(frames, camera=camera)  # per pixel with an sCMOS camera's maps
        return layout.condition_channels(y_hat, frame_norm, self.unet.config)

    def _localize_3d(self, frames, optics: Optics, threshold, batch_size, output_type, return_dict, screen):
        """DeepSTORM mode under a 3D PSF: the network's molecules and their z (its z channel) seed the 3D Poisson
        MLE on the frames (:func:`~smlm_diffusers.localization.localize3d.localize_3d`), with a matched filter's
        spots where the network saw none; the table has z_nm and sigma_z_nm (the 3D CRLB)."""
        from ..localization.localize3d import localize_3d, seeds_from_output

        unit = self.kde_net.predict(frames, batch_size=batch_size, camera=optics.camera)
        seeds = seeds_from_output(unit, self.kde_net.config, optics.camera.pixel_size_nm, threshold)
        locs = localize_3d(frames.cpu().numpy(), optics, seeds=seeds)
        rejected = None
        if screen:
            locs, rejected = screen_localizations(locs, tuple(frames.shape[-2:]), optics.camera.pixel_size_nm,
                                                  optics.psf.sigma_px)
        kde = self.kde_scaling.from_unit(unit[:, 0])
        out = (locs, kde, None, None, kde)
        if output_type == "np":
            out = tuple(o.float().cpu().numpy() if isinstance(o, torch.Tensor) else o for o in out)
        return out if not return_dict else SMLMPipelineOutput(*out, rejected=rejected, mode="DeepSTORM (3D)")

    def call_mode(self, num_samples: int | None = None, arbitrate: bool | None = None,
                  refine: bool | None = None) -> CallMode:
        """The mode (:class:`.modes.CallMode`: samples, arbitration, ``.name``) a call with these arguments runs;
        None is the folder's ``default_num_samples``, ``deepstorm_arbitrate``, ``refine``."""
        return call_mode(self.config, num_samples, arbitrate, refine)

    def tile_plan(self, h: int, w: int, tile_size: int | None = None) -> TileLayout:
        """How a working grid of ``h x w`` pixels is cut for the UNet (:meth:`.TileLayout.plan`), in tiles
        of at most ``tile_size`` pixels (default the pipeline's)."""
        mult = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return TileLayout.plan(h, w, tile_size or self.config.tile_size, self.config.tile_overlap, mult,
                               self.config.get("tile_edge"))

    def frame_tiles(self, height: int, width: int) -> TileLayout:
        """The tile plan of a frame of ``height x width`` camera pixels: on its KDE grid for a
        KDE-layout (v1) UNet, on the camera pixels themselves for a camera-layout (v2) one."""
        u = 1 if layout.layout_of(self.unet.config) == "camera" else int(self.kde_net.config.upsampling)
        return self.tile_plan(height * u, width * u)

    def tile_layout(self, h: int, w: int) -> tuple[tuple[int, int], list[tuple[int, int]], tuple[int, int]]:
        """The tile shape, the top-left corners on the padded grid, and the padded grid's shape."""
        plan = self.tile_plan(h, w)
        return plan.tile, plan.corners, plan.padded

    @torch.no_grad()
    def __call__(
        self,
        frames,
        num_samples: int | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        output_type: str = "np",
        return_dict: bool = True,
        camera: Camera | None = None,
        threshold: float | None = None,
        sampler: str | None = None,
        schedule: str | None = None,
        min_probability: float | None = None,
        mixed_precision: str = "auto",
        refine: bool | None = None,
        split: bool | None = None,
        sample_everywhere: bool = False,
        sparse_windows: bool | None = None,
        screen: bool = True,
        arbitrate: bool | None = None,
        optics: Optics | None = None,
    ) -> SMLMPipelineOutput | tuple:
        """Localize emitters with per-molecule uncertainty.

        Parameters
        ----------
        frames : array or tensor, [H, W] or [F, H, W], ADU (integer or float)
        num_samples : int, optional
            Posterior KDE samples per frame (DDPM mode); 0 runs DeepSTORM mode (the only mode of a folder without
            a DDPM, and of a 3D one: its table has z_nm and sigma_z_nm). None (default): the folder's
            ``default_num_samples``, 0 in the shipped folders, so ``pipe(frames)`` runs DeepSTORM + arbitration,
            which the README's dense table measures as good as DDPM mode in a fraction of its time (:mod:`.modes`).
        num_inference_steps : int, optional
            Reverse diffusion steps (at most the scheduler's ``max_inference_steps``); default
            the pipeline's ``default_inference_steps``.
        generator : torch.Generator, optional
            Seeds the sampling noise: same seed, same result.
        batch_size : int
            Tiles (x samples) per UNet forward pass.
        output_type : {"np", "pt"}, arrays as numpy (default) or torch tensors
        camera : Camera, optional
            The camera of these frames (pixel size, offset, gain, read noise); it replaces the camera of the
            resolved optics (below). An sCMOS
            camera's per-pixel maps (:meth:`~smlm_diffusers.simulation.camera.Camera.with_maps`) must have the
            frames' rows and columns: DeepSTORM's input, the frame fits, their bounds and the arbitration then
            use each pixel's offset, gain and read noise.
        threshold : float, optional
            KDE peak threshold for localization (default: the pipeline's tuned ``threshold``).
        sampler, schedule : {"ancestral", "ddim"}, str ("logsnr", "cosine", "linear", "searched"), optional
        min_probability : float, optional
            Keep only molecules of at least this detection probability in the table (default: the folder's
            ``probability_floor``; the folder's ``min_probability`` is what renders and scores keep).
        mixed_precision : {"auto", "bf16", "no"}
            DeepSTORM and the UNet under bfloat16 autocast, in float32, or bf16 only where the
            device runs it natively (:mod:`smlm_diffusers.models.precision`); outputs stay float32.
        refine, split : bool, optional
            Override the pipeline's ``refine`` / ``refine_split`` (class docstring).
        sample_everywhere : bool
            DDPM mode: draw the samples over the whole frame (every non-empty tile, as a viewer of the
            variance map wants) instead of only around the molecules whose configuration is in doubt.
        sparse_windows : bool, optional
            DeepSTORM mode: run the network only in windows around the spots a matched filter sees, on
            frames where they cover less than half the frame (:mod:`smlm_diffusers.models.regions`);
            default the pipeline's ``sparse_windows``. DDPM mode always runs whole frames.
        screen : bool
            Leave out of the table the rows whose numbers are impossible (a failed fit, a sigma that is not
            finite or outside [0.1 nm, 10 PSF widths], under 1 photon, a position outside the frames), counted
            in the output's ``rejected`` (:mod:`smlm_diffusers.screening`). The movie runner
            screens after its own steps instead.
        arbitrate : bool, optional
            DeepSTORM mode: weigh DeepSTORM's molecules against their pair proposals on the frame (True) or not
            (False: plain DeepSTORM); default the folder's ``deepstorm_arbitrate``. DDPM mode always weighs.
        optics : Optics, optional
            The microscope of these frames (camera + PSF); default the folder's (:attr:`optics`). Resolved once
            (:meth:`resolve_optics`, ``camera=`` replacing its camera), this one value is what the frame fit, the
            arbitration, the DDPM path and the 3D path see; the network's config is never read for the PSF here.

        The output's ``mode`` names the mode that ran (``"DeepSTORM + arbitration"``, ``"DDPM"``, ...).
        The deprecated camera floats (``camera_offset=`` ...) are gone: pass ``camera=Camera(...)``.
        """
        bf16 = use_bf16(mixed_precision, self._execution_device) or (self.unet is not None
                                                                    and self.unet.dtype == torch.bfloat16)
        if num_inference_steps is None:
            num_inference_steps = self.config.default_inference_steps
        mode = self.call_mode(num_samples, arbitrate, refine)
        num_samples = mode.num_samples
        optics = _check_call(self, self.resolve_optics(optics, camera), num_samples, output_type)
        camera, psf_sigma_px = optics.camera, float(optics.psf.sigma_px)
        threshold = self.config.threshold if threshold is None else threshold
        floor = self.config.probability_floor if min_probability is None else float(min_probability)
        refine = self.config.refine if refine is None else refine
        split = self.config.refine_split if split is None else split
        frames = check_frames(frames)
        camera.check_shape(frames.shape)  # per-pixel maps must have the frames' rows and columns
        if optics.ndim == 3:
            return self._localize_3d(frames, optics, threshold, batch_size, output_type, return_dict, screen)
        device, scaling = self._execution_device, self.kde_scaling

        def localize(kde):
            return self.localize_density(kde, pixel_size_nm=camera.pixel_size_nm, threshold=threshold)
        localize.pixel_nm = camera.pixel_size_nm / self.kde_net.config.upsampling

        sparse = self.config.sparse_windows if sparse_windows is None else sparse_windows
        y_hat = self.kde_net.predict(frames, batch_size=batch_size, camera=camera, mixed_precision=mixed_precision,
                                     windows=SpotWindows() if sparse and num_samples == 0 else None
                                     ).to(device)  # [F,1,uH,uW]
        deepstorm_kde = scaling.from_unit(y_hat[:, 0])
        frames_np = frames.cpu().numpy()
        base = deepstorm_molecules(localize(deepstorm_kde), frames_np, camera, psf_sigma_px,
                                   refine or num_samples > 0, split)
        if num_samples == 0:  # DeepSTORM mode (its molecules weighed against their pairs, with the arbitration)
            locs = arbitrate_configurations(frames_np, base, NO_DETECTIONS, 0, camera, psf_sigma_px,
                                            link_radius_nm=self.config.link_radius_nm, split_mask=ambiguous(base),
                                            probability_floor=floor) if mode.arbitrate else base
            out = (locs, deepstorm_kde, None, None, deepstorm_kde)
        else:
            out = self._ddpm_molecules(y_hat, frames, frames_np, base, optics, localize, num_samples,
                                       num_inference_steps, generator, batch_size, sampler, schedule, threshold,
                                       floor, sample_everywhere, bf16) + (deepstorm_kde,)
        rejected = None
        if screen:
            locs, rejected = screen_localizations(out[0], tuple(frames.shape[-2:]), camera.pixel_size_nm, psf_sigma_px)
            out = (locs,) + tuple(out[1:])
        if output_type == "np":
            out = tuple(o.float().cpu().numpy() if isinstance(o, torch.Tensor) else o for o in out)
        if not return_dict:
            return out
        return SMLMPipelineOutput(*out, rejected=rejected, mode=mode.name)


def _check_call(pipe, optics: Optics, num_samples: int, output_type: str) -> Optics:
    """The call's resolved ``optics``, once the call's mode (``num_samples`` >= 0: :func:`.modes.call_mode`) and
    output type are known to be possible."""
    if output_type not in ("np", "pt"):
        raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
    if num_samples > 0 and (pipe.unet is None or optics.ndim == 3):
        why = " for its 3D PSF: the DDPM is 2D only" if optics.ndim == 3 else ""
        raise ValueError(f"this folder has no DDPM{why}; localize with num_samples=0 (DeepSTORM mode)")
    return optics
