"""More than one GPU: with CXR_MAX_RUNNING=N on a machine with N GPUs each worker gets its own
(CUDA_VISIBLE_DEVICES). The device lists are faked, so this runs on the CPU."""
import os

from engine.runs import Registry
from engine.runs import jobs, launch


def test_visible_gpus_come_from_cuda_visible_devices_or_the_device_files(tmp_path):
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 1,3"}) == ["0", "1", "3"]
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert jobs.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5a1b,GPU-77c0"}) == ["GPU-5a1b", "GPU-77c0"]
    for name in ("nvidia10", "nvidia2", "nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-modeset", "sda"):
        (tmp_path / name).write_text("")
    assert jobs.visible_gpus({}, dev=tmp_path) == ["0", "2", "10"]
    assert jobs.visible_gpus({}, dev=tmp_path / "absent") == []


def test_assign_gpu_gives_each_worker_its_own_then_shares_evenly():
    assert jobs.assign_gpu([], []) is None
    assert jobs.assign_gpu(["0", "1", "2"], []) == "0"
    assert jobs.assign_gpu(["0", "1", "2"], ["0"]) == "1"
    assert jobs.assign_gpu(["0", "1", "2"], ["0", "2"]) == "1"
    assert jobs.assign_gpu(["0", "1"], ["0", "1", "0"]) == "1"  # more workers than GPUs: the least loaded
    assert jobs.assign_gpu(["0", "1"], ["7"]) == "0"  # a GPU no longer visible is not counted


class _FakeProc:
    pid = os.getpid()  # alive, so the scheduler's liveness check keeps the run running


def test_the_scheduler_spreads_runs_over_the_gpus(monkeypatch, tmp_path):
    spawned, real = [], launch.subprocess.Popen

    def popen(cmd, *args, **kw):
        if cmd[1:4] != ["-m", "engine", "worker"]:
            return real(cmd, *args, **kw)  # git and the like
        spawned.append((cmd[-1], kw["env"]))
        return _FakeProc()

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setenv("CXR_MAX_RUNNING", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    reg = Registry()
    names = [jobs.submit("covid-scratch", {"covid_root": str(tmp_path)}, name=f"r{k}", registry=reg)
             for k in range(4)]
    jobs.submit("covid-scratch", {"covid_root": str(tmp_path), "device": "cpu"}, name="on-cpu", registry=reg,
                start=False)
    gpus = {name: env.get("CUDA_VISIBLE_DEVICES") for name, env in spawned}
    assert gpus == {"r0": "4", "r1": "5", "r2": "6"}  # one GPU each; r3 waits for a free slot
    assert reg.get(names[3]).status == "queued"
    assert (reg.run_dir("r1") / jobs.GPU_FILE).read_text() == "5"
    reg.transition("r1", "succeeded", finished=1.0)  # r1's GPU is free again
    jobs.schedule(reg)
    assert spawned[-1][0] == "r3" and spawned[-1][1]["CUDA_VISIBLE_DEVICES"] == "5"
    reg.transition("r0", "succeeded", finished=1.0)
    jobs.schedule(reg)
    assert spawned[-1][0] == "on-cpu" and spawned[-1][1]["CUDA_VISIBLE_DEVICES"] == "4,5,6"  # not narrowed
    assert not (reg.run_dir("on-cpu") / jobs.GPU_FILE).exists()
