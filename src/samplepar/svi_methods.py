"""The demand workflow's SVI methods by name, in a module light enough for the command line's
help: each is a guide (:mod:`samplepar.guides`) and whether the model's product effect sits at
the product's mean log price (:func:`samplepar.mcmc.effect_at_mean`). See
:mod:`samplepar.compare` for what each is worth.
"""

SVI_METHODS = {
    "normal": ("normal", False),
    "lowrank": ("lowrank", False),
    "paired": ("paired", False),
    "normal-at-mean": ("normal", True),
    "lowrank-at-mean": ("lowrank", True),
}
RECOMMENDED = "normal-at-mean"
