"""The web demo's logic (``app.py`` only builds the page): no Gradio imports here.

- :mod:`~smlm_diffusers.app.core`: loading the pipeline, input checks, runs, metrics, the CRLB sweep;
- :mod:`~smlm_diffusers.app.downloads`: the download files (the CLI's table writers, calibrated TIFFs);
- :mod:`~smlm_diffusers.app.progress`: progress in frames and diffusion steps;
- :mod:`~smlm_diffusers.app.zoom`: the zoomed uncertainty view.

``smlm_diffusers.app_utils`` re-exports :mod:`~smlm_diffusers.app.core` for older imports.
"""
