"""Runner: event order, cancel exceptions, skip-by-return, weighted statistics, device and progress callbacks."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, Callback, CancelBatchException,
                        CancelEpochException, CancelTrainException, CudaCallback, DataBunch, Dataset,
                        DeviceCallback, EVENTS, Learner, ParamScheduler, ProgressCallback, Recorder, Runner,
                        accuracy, default_device, get_dls, get_runner, sched_lin)


def _data(n_train=10, n_valid=6, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, 3, generator=g)
    y = torch.randint(0, 2, (n_train + n_valid,), generator=g)
    tr, va = Dataset(x[:n_train], y[:n_train]), Dataset(x[n_train:], y[n_train:])
    return DataBunch(*get_dls(tr, va, bs), c=2)


def _learn(data, lr=0.1):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return Learner(model, torch.optim.SGD(model.parameters(), lr=lr), F.cross_entropy, data)


class RecordEvents(Callback):
    """Logs every event with the phase it happened in."""
    _order = 100

    def __init__(self):
        self.log = []


for _e in EVENTS:
    setattr(RecordEvents, _e, lambda self, e=_e: self.log.append((e, self.run.in_train)) and None)


def _batch(train):
    b = ["begin_batch", "after_pred", "after_loss"]
    return b + (["after_backward", "after_step"] if train else []) + ["after_batch"]


def test_event_order_one_epoch():
    data = _data()  # 3 training batches (4, 4, 2), 1 validation batch (bs*2 = 8 >= 6)
    rec = RecordEvents()
    run = Runner(cbs=[rec])
    run.fit(1, _learn(data))
    names = [e for e, _ in rec.log]
    expected = (["begin_fit", "begin_epoch"] + _batch(True) * 3 + ["begin_validate"] + _batch(False)
                + ["after_epoch", "after_fit"])
    assert names == expected
    assert run.record_events is rec  # attribute name: camel case -> snake case
    assert len(data.valid_dl) == 1 and data.valid_dl.sampler.batch_size == 8


def test_train_eval_callback_counts_and_modes():
    data = _data()
    learn = _learn(data)
    seen = []

    class Spy(Callback):
        def after_batch(self):
            seen.append((self.in_train, self.model.training, torch.is_grad_enabled(), self.n_epochs, self.n_iter))

    run = Runner(cb_funcs=[Spy])
    run.fit(2, learn)
    train = [s for s in seen if s[0]]
    valid = [s for s in seen if not s[0]]
    assert all(s[1] and s[2] for s in train) and all(not s[1] and not s[2] for s in valid)
    assert [s[3] for s in train] == pytest.approx([1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3, 2.0])
    assert train[-1][4] == 6 and isinstance(train[0][3], float)


def _raiser(exc, event, when=lambda run: True):
    class Raise(Callback):
        _order = 200  # after RecordEvents, so it logs the event that raises
    setattr(Raise, event, lambda self: (_ for _ in ()).throw(exc()) if when(self.run) else None)
    return Raise()


def test_cancel_batch_skips_step_but_runs_after_batch():
    data = _data()
    learn = _learn(data)
    w0 = learn.model.weight.detach().clone()
    rec = RecordEvents()
    run = Runner(cbs=[_raiser(CancelBatchException, "after_loss", lambda r: r.in_train), rec])
    run.fit(1, learn)
    names = [e for e, _ in rec.log]
    assert "after_step" not in names and "after_backward" not in names
    assert names.count("after_cancel_batch") == 3 and names.count("after_batch") == 4
    assert torch.equal(learn.model.weight, w0)  # no optimizer step happened


def test_cancel_epoch_ends_the_pass_only():
    data = _data()
    rec = RecordEvents()
    run = Runner(cbs=[_raiser(CancelEpochException, "after_batch", lambda r: r.in_train), rec])
    run.fit(2, _learn(data))
    names = [e for e, _ in rec.log]
    assert names.count("after_cancel_epoch") == 2
    assert [p for e, p in rec.log if e == "after_batch"] == [True, False, True, False]
    assert names.count("after_epoch") == 2 and names[-1] == "after_fit"


def test_cancel_train_stops_fit_and_still_runs_after_fit():
    data = _data()
    rec = RecordEvents()
    run = Runner(cbs=[_raiser(CancelTrainException, "after_step", lambda r: r.n_iter >= 1), rec])
    run.fit(3, _learn(data))
    names = [e for e, _ in rec.log]
    assert names.count("after_step") == 2
    assert names[-2:] == ["after_cancel_train", "after_fit"] and "after_epoch" not in names


def test_returning_true_skips_training_or_validation():
    data = _data()

    class SkipTrain(Callback):
        def begin_epoch(self):
            return True

    rec = RecordEvents()
    learn = _learn(data)
    w0 = learn.model.weight.detach().clone()
    Runner(cbs=[SkipTrain(), rec]).fit(1, learn)
    assert all(not p for e, p in rec.log if e == "begin_batch")
    assert torch.equal(learn.model.weight, w0)

    class SkipValid(Callback):
        def begin_validate(self):
            return True

    rec = RecordEvents()
    Runner(cbs=[SkipValid(), rec]).fit(1, _learn(data))
    assert all(p for e, p in rec.log if e == "begin_batch")


def test_avg_stats_weights_by_batch_size(capsys):
    data = _data(n_train=10, n_valid=6, bs=4)  # training batches 4, 4, 2: an uneven last batch
    learn = _learn(data, lr=0.0)  # lr 0: the model is fixed, so the exact means are computable
    run = Runner(cb_funcs=[partial(AvgStatsCallback, [accuracy])])
    run.fit(1, learn)
    with torch.no_grad():
        for ds, stats, phase in ((data.train_ds, run.avg_stats.train_stats, "train"),
                                 (data.valid_ds, run.avg_stats.valid_stats, "valid")):
            out = learn.model(ds.x)
            exact_loss = F.cross_entropy(out, ds.y).item()
            exact_acc = accuracy(out, ds.y).item()
            assert stats.avg_stats == pytest.approx([exact_loss, exact_acc], rel=1e-5)
            assert run.avg_stats.history[0][f"{phase}_loss"] == pytest.approx(exact_loss, rel=1e-5)
            assert run.avg_stats.history[0][f"{phase}_accuracy"] == pytest.approx(exact_acc, rel=1e-5)
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.out.startswith("epoch 1") and captured.err == ""


def test_recorder_and_param_scheduler():
    data = _data()
    learn = _learn(data)
    learn.opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1})
    learn, run = get_runner(learn.model, data, cbs=[Recorder, partial(ParamScheduler, "lr", sched_lin(1.0, 0.0))])
    learn.opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1})
    run.fit(2, learn)
    expected = [1.0 - k / 6 for k in range(6)]  # position n_epochs/epochs at each training batch
    assert run.recorder.lrs[0] == pytest.approx(expected) and run.recorder.lrs[-1] == pytest.approx(expected)
    assert len(run.recorder.losses) == 6 and all(type(l) is float for l in run.recorder.losses)
    assert run.recorder.plot_lr() is not None and run.recorder.plot_loss(skip_last=1) is not None
    import matplotlib.pyplot as plt
    plt.close("all")


def test_get_runner_accepts_classes_partials_and_instances():
    data = _data()
    rec = Recorder()
    learn, run = get_runner(nn.Linear(3, 2), data, lr=0.3, cbs=[rec, partial(AvgStatsCallback, accuracy)])
    assert isinstance(learn.opt, torch.optim.SGD) and learn.opt.param_groups[0]["lr"] == 0.3
    assert run.recorder is rec and isinstance(run.avg_stats, AvgStatsCallback)
    assert learn.loss_func is F.cross_entropy


def test_device_callbacks_on_cpu_and_batch_transform():
    data = _data()
    seen = []

    class Spy(Callback):
        _order = 10

        def after_pred(self):
            seen.append((self.xb.device.type, self.xb.shape[1:], next(self.model.parameters()).device.type))

    assert default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for dev_cb in (DeviceCallback("cpu"), CudaCallback(device="cpu")):
        seen.clear()
        learn = _learn(data)
        learn.model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
        learn.opt = torch.optim.SGD(learn.model.parameters(), lr=0.1)
        run = Runner(cbs=[dev_cb, BatchTransformXCallback(lambda x: x.view(-1, 1, 3)), Spy()])
        run.fit(1, learn)
        assert seen and all(s == ("cpu", (1, 3), "cpu") for s in seen)
    assert isinstance(CudaCallback(), DeviceCallback) and Runner(cbs=[CudaCallback("cpu")]).cuda is not None


def test_progress_callback_writes_nothing_to_stderr(capsys):
    data = _data()
    run = Runner(cb_funcs=[ProgressCallback, partial(AvgStatsCallback, accuracy)])
    run.fit(2, _learn(data))
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "epoch 2" in captured.out and "valid: loss" in captured.out
    assert run.logger is print  # restored after fit


def test_progress_bars_in_a_notebook_end_finished(tmp_path):
    """In a notebook (a real kernel, outputs as JupyterLab keeps them after display updates): while training the
    master bar and the batch bar are shown; when fit returns, the epoch lines stay and no bar is left behind."""
    import nbformat
    from nbclient import NotebookClient

    code = (
        "import torch\nfrom functools import partial\nfrom torch import nn\n"
        "from course_lib import AvgStatsCallback, DataBunch, Dataset, Learner, ProgressCallback, Runner, accuracy, get_dls\n"
        "x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))\n"
        "data = DataBunch(*get_dls(Dataset(x, y), Dataset(x, y), 16), c=2)\n"
        "model = nn.Linear(3, 2)\n"
        "learn = Learner(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.functional.cross_entropy, data)\n"
        "Runner(cb_funcs=[ProgressCallback, partial(AvgStatsCallback, accuracy)]).fit(2, learn)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    html = [o["data"]["text/html"] for o in outputs if o.get("output_type") in ("display_data", "execute_result")
            and "text/html" in o.get("data", {})]
    shown = "".join(html)
    assert not any(o.get("output_type") == "error" for o in outputs), outputs
    assert "epoch 2" in shown and "valid: loss" in shown, shown[:2000]
    assert "<progress" not in shown, f"a progress bar is left behind after fit:\n{shown[:3000]}"
