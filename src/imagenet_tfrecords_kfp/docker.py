"""Each step of a kfp.local run in its own container of the component image, as a cluster runs it.

``docker_runner(pipeline, mounts)`` gives kfp.local a ``DockerRunner`` whose containers

- see the data and output folders (and the pipeline root) at the same paths as this machine,
- get the CPU and memory limits that the compiled pipeline gives the step's pod,
- run as this machine's user (files written into a local output are the user's, not root's),
- share the host's network (object-store servers on 127.0.0.1 stay reachable), the object-store
  environment variables (AWS_*, GOOGLE_*, ...) and IMAGENET_TFRECORDS_* (the run they belong to), and
- are labelled ``imagenet-tfrecords.step=<step>``.

kfp 2.17.3's DockerTaskHandler starts containers with ``auto_remove=True`` and reads the exit status
afterwards; when the container is already gone it assumes success, so a failed step can be reported
as SUCCESS (kubeflow/pipelines#13332). ``StatusCheckedDockerTaskHandler`` keeps the container until
its exit status is read, removes it then, and counts a status it cannot read as a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

from kfp import local
from kfp.local import docker_task_handler, status

LABEL = "imagenet-tfrecords.step"
# What a step may need from this machine's environment to reach an object store (no cloud metadata probing).
# IMAGENET_TFRECORDS_*: the run token that lets the steps join the run holding the output, the lease's length.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "FSSPEC_", "CLOUDSDK_", "BOTO_", "GCE_", "IMAGENET_TFRECORDS_")
_ENV_NAMES = {"STORAGE_EMULATOR_HOST", "NO_GCE_CHECK", "NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"}
_KILLED = {137: "killed (SIGKILL, e.g. docker kill)", 143: "terminated (SIGTERM)"}


def step_limits(pipeline) -> dict[str, dict]:
    """docker run limits of each step (by its Python function's name), from the pipeline's own resource limits."""
    from google.protobuf import json_format

    deployment = json_format.MessageToDict(pipeline.pipeline_spec.deployment_spec)
    limits = {}
    for executor in deployment.get("executors", {}).values():
        container = executor.get("container", {})
        args = container.get("args", [])
        if "--function_to_execute" not in args:
            continue
        resources = container.get("resources", {})
        run_args = {}
        if "cpuLimit" in resources:
            run_args["nano_cpus"] = int(float(resources["cpuLimit"]) * 1e9)
        if "memoryLimit" in resources:  # in GB (10^9 bytes), as the compiler writes it
            run_args["mem_limit"] = int(round(float(resources["memoryLimit"]) * 1e9))
            run_args["memswap_limit"] = run_args["mem_limit"]  # no swap beyond the limit, as in a pod
        limits[args[args.index("--function_to_execute") + 1]] = run_args
    return limits


def step_of(command: list[str]) -> str:
    m = re.search(r"--function_to_execute\s+(\w+)", " ".join(command))
    return m[1] if m else "step"


class StatusCheckedDockerTaskHandler(docker_task_handler.DockerTaskHandler):
    """kfp.local's Docker task handler, reading every container's real exit status (see the module's doc)."""

    limits: dict[str, dict] = {}
    mounts: list[str] = []
    failures: list[str] = []  # one line per failed container, for the command's error message
    _lock = threading.Lock()

    def run(self) -> status.Status:
        import docker

        step = step_of(self.full_command)
        client = docker.from_env()
        container = None
        try:
            run_args = {**self.runner.container_run_args, **self.limits.get(step, {})}
            run_args["environment"] = {**run_args.get("environment", {}), **self.env_vars}
            run_args["labels"] = {**run_args.get("labels", {}), LABEL: step}
            container = client.containers.run(
                image=self.image,
                command=self.full_command,
                volumes={**{p: {"bind": p, "mode": "rw"} for p in self.mounts}, **self.get_volumes_to_mount(client)},
                detach=True,
                auto_remove=False,
                **run_args,
            )
            container.reload()
            host = container.attrs["HostConfig"]
            cpus = f"{host['NanoCpus'] / 1e9:g} CPUs" if host.get("NanoCpus") else "no CPU limit"
            memory = f"{host['Memory'] / 2**30:g} GiB" if host.get("Memory") else "no memory limit"
            print(f"container {container.short_id} of image {self.image}: {cpus}, {memory}")
            for line in container.logs(stream=True, follow=True):
                print(line.decode(errors="replace"), end="")
            code = container.wait().get("StatusCode", -1)
            container.reload()
            oom = container.attrs["State"].get("OOMKilled")
        except docker.errors.APIError as e:
            code, reason = -1, f"docker: {e.explanation or e}"
        else:
            reason = f"killed: out of memory ({memory})" if oom else _KILLED.get(code, f"exit status {code}")
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            client.close()
        if code != 0:
            line = f"container of step {step} ({self.image}) ended: {reason}"
            print(line)
            with self._lock:
                self.failures.append(line)
            return status.Status.FAILURE
        return status.Status.SUCCESS


def docker_runner(pipeline, mounts: list[str], **run_args) -> local.DockerRunner:
    """A DockerRunner for ``pipeline``'s steps with ``mounts`` (local folders) visible at the same paths."""
    environment = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    # a user's own home may not exist in the image: where Python and its libraries may write their caches
    environment.setdefault("HOME", "/tmp")
    StatusCheckedDockerTaskHandler.limits = step_limits(pipeline)
    StatusCheckedDockerTaskHandler.mounts = [os.path.abspath(p) for p in mounts]
    StatusCheckedDockerTaskHandler.failures = []
    return local.DockerRunner(
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        environment=environment,
        **run_args,
    )


@contextlib.contextmanager
def checked_exit_status():
    """kfp.local's DockerRunner tasks run by StatusCheckedDockerTaskHandler while inside."""
    real = docker_task_handler.DockerTaskHandler
    docker_task_handler.DockerTaskHandler = StatusCheckedDockerTaskHandler
    try:
        yield StatusCheckedDockerTaskHandler
    finally:
        docker_task_handler.DockerTaskHandler = real
