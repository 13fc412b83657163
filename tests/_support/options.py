"""The option sets of ``jdt_loss`` that the loss, gradient and replica tests all run
through, by name: defaults, Dice and Tversky weights, each level and mode, norms,
gamma, log loss, smoothing, class weights, class-agnostic and threshold variants."""

OPTION_SETS = {
    "defaults": {},
    "dice": {"alpha": 0.5, "beta": 0.5},
    "tversky": {"alpha": 0.3, "beta": 0.7},
    "image-and-class": {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0},
    "all-levels": {"mIoUD": 0.5, "mIoUI": 0.25, "mIoUC": 0.25},
    "all-classes": {"active_classes_mode_hard": "ALL", "mIoUI": 1.0},
    "soft-present": {"active_classes_mode_soft": "PRESENT", "threshold": 0.3, "mIoUC": 1.0},
    "gamma": {"gamma": 2.5, "mIoUI": 1.0},
    "log-loss": {"log_loss": True, "mIoUI": 0.5},
    "l2": {"norm": 2, "mIoUC": 1.0},
    "l3-soft-all": {"norm": 3, "active_classes_mode_hard": "ALL"},
    "no-smooth": {"smooth": 0.0, "mIoUI": 1.0},
    "weights": {"class_weights": [0.5, 1.0, 2.0, 0.25], "mIoUI": 1.0, "mIoUC": 1.0},
    "agnostic": {"class_agnostic": True, "mIoUI": 1.0},
    "agnostic-weighted": {"class_agnostic": True, "class_weights": [1.0, 2.0, 3.0, 4.0]},
    "threshold-high": {"threshold": 0.99, "active_classes_mode_soft": "PRESENT"},
}

# The option sets that take their own branches: the defaults, all three levels at
# once, a soft PRESENT mode, the L2 norm (the generic path) and class weights with the
# class-agnostic form. Every backend (and every autodiff library) runs these; the grid
# backends run all of OPTION_SETS (tests/_support/tiers.py).
SMOKE_OPTION_SETS = ("defaults", "all-levels", "soft-present", "l2", "agnostic-weighted")
