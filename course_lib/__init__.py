"""course_lib: the data, training loop, callbacks, schedulers and hooks of fast.ai's 2019 lesson 10, and the
course's picture of what each norm reduces over (figures.py)."""
from .callbacks import (AvgStats, AvgStatsCallback, BatchTransformXCallback, CudaCallback, DeviceCallback,
                        ParamScheduler, ProgressCallback, Recorder, default_device)
from .data import (GRADING_N_TRAIN, GRADING_N_VALID, GRADING_SEED, DataBunch, Dataset, MNISTDataError,
                   accuracy, cache_dir, get_data, get_dls, get_mnist_databunch, grading_mode,
                   mnist_pickle_path, mnist_view, normalize, normalize_to, view_tfm)
from .figures import draw_norm_axes, reduction_set
from .hooks import (Hook, Hooks, append_stats, append_stats_hist, get_hist, get_min, plot_hists,
                    plot_layer_stats, plot_mins)
from .model import GeneralRelu, Lambda, flatten, get_cnn_layers, get_cnn_model, init_cnn, set_seed
from .runner import (EVENTS, Callback, CancelBatchException, CancelEpochException, CancelTrainException,
                     Learner, Runner, TrainEvalCallback, get_learn_run, get_runner)
from .schedulers import annealer, combine_scheds, sched_cos, sched_exp, sched_lin, sched_no

__all__ = [
    # data
    "MNISTDataError", "GRADING_N_TRAIN", "GRADING_N_VALID", "GRADING_SEED", "grading_mode",
    "mnist_pickle_path", "cache_dir", "get_data", "normalize", "normalize_to", "Dataset", "get_dls",
    "DataBunch", "accuracy", "view_tfm", "mnist_view", "get_mnist_databunch",
    # training loop
    "EVENTS", "CancelTrainException", "CancelEpochException", "CancelBatchException", "Callback",
    "TrainEvalCallback", "Learner", "Runner", "get_runner", "get_learn_run",
    # callbacks
    "AvgStats", "AvgStatsCallback", "Recorder", "ParamScheduler", "BatchTransformXCallback",
    "default_device", "DeviceCallback", "CudaCallback", "ProgressCallback",
    # schedulers
    "annealer", "sched_lin", "sched_cos", "sched_no", "sched_exp", "combine_scheds",
    # hooks
    "Hook", "Hooks", "append_stats", "append_stats_hist", "get_hist", "get_min",
    "plot_layer_stats", "plot_hists", "plot_mins",
    # figures
    "draw_norm_axes", "reduction_set",
    # model
    "Lambda", "flatten", "GeneralRelu", "init_cnn", "get_cnn_layers", "get_cnn_model", "set_seed",
]
