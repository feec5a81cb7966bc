"""Training and evaluation: `fit` over `train_one_epoch` / `validate`, reporting through callbacks;
per-run stop requests; DistributedDataParallel helpers; evaluation of a split with bootstrap CIs."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "fit": "loop", "train_one_epoch": "loop", "validate": "loop", "masked_bce": "loop", "TrainState": "loop",
    "Callback": "callbacks", "Callbacks": "callbacks",
    "StopRequest": "signals", "stop_requests": "signals",
    "predict": "evaluation", "evaluate_split": "evaluation", "predictions_of": "evaluation",
    "make_loader": "sampling", "sample_weights": "sampling", "epoch_order": "sampling",
    "dist_info": "distributed", "init_distributed": "distributed",
})
