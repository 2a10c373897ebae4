"""Each purpose draws from its own random stream, seeded from the member's seed plus an offset
(so that, e.g., holding out a validation split does not change the batch order). The offsets
are written here once; the training loop, the data splits and the tests import them."""

BATCH_ORDER = 1_000_003    # the training split's shuffling, per epoch
JAC_PROBES = 2_000_003     # trainer.jac_reg's Hutchinson probes
VALIDATION = 3_000_017     # which training samples dataset.val_fraction holds out
