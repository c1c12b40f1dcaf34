"""GAN trainer: `ganforge train --config FILE` (see docs/trainer.md).

Importing the package is cheap; torch is loaded by the submodules that need it. It never imports
ganforge.operator, ganforge.serving or ganforge.local.
"""
