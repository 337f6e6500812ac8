"""The kernel client's readiness (kernel.PromptClient), against stand-in channels: no kernel, no fixed wait.

Ready means the kernel answered a kernel_info request on the shell channel and IOPub carried that same request's idle
status: IOPub is then subscribed, so no later output can be lost to zmq's slow joiner. A status lost to a late
subscription makes it ask again at once; a kernel that never answers is said to have died or to be too slow."""

from __future__ import annotations

import asyncio
import itertools
from queue import Empty

import pytest

from course_grader.kernel import PromptClient


class Channel:
    """A channel whose get_msg hands out what `answer` put in it (Empty when nothing is there)."""

    def __init__(self) -> None:
        self.queue: list[dict] = []

    async def get_msg(self, timeout: float | None = None) -> dict:
        if not self.queue:
            await asyncio.sleep(min(timeout or 0.0, 0.01))
            raise Empty
        return self.queue.pop(0)


class Kernel:
    """Answers each kernel_info on the shell channel; its idle status on IOPub is lost for the first `lost` requests
    (published before the subscription reached it), and the kernel never answers when `dead`."""

    def __init__(self, lost: int = 0, dead: bool = False) -> None:
        self.lost, self.dead, self.asked = lost, dead, []
        self.shell, self.iopub = Channel(), Channel()
        self.ids = (f"request-{i}" for i in itertools.count())

    def client(self) -> PromptClient:
        kernel = self
        # PromptClient with these channels (not sockets), built without jupyter_client's set-up.
        cls = type("StandIn", (PromptClient,), {"shell_channel": property(lambda self: kernel.shell),
                                                "iopub_channel": property(lambda self: kernel.iopub)})
        client = cls.__new__(cls)

        def kernel_info() -> str:
            msg_id = next(kernel.ids)
            kernel.asked.append(msg_id)
            if not kernel.dead:
                parent = {"msg_id": msg_id}
                kernel.shell.queue.append({"msg_type": "kernel_info_reply", "parent_header": parent, "content": {}})
                if len(kernel.asked) > kernel.lost:
                    kernel.iopub.queue.append({"msg_type": "status", "parent_header": {"msg_id": "other"},
                                               "content": {"execution_state": "idle"}})
                    kernel.iopub.queue.append({"msg_type": "status", "parent_header": parent,
                                               "content": {"execution_state": "idle"}})
            return msg_id

        async def alive() -> bool:
            return not kernel.dead

        object.__setattr__(client, "kernel_info", kernel_info)
        object.__setattr__(client, "_async_is_alive", alive)
        object.__setattr__(client, "_handle_kernel_info_reply", lambda msg: kernel.asked.append("handled"))
        return client


def test_ready_at_its_own_requests_idle_status():
    kernel = Kernel()
    asyncio.run(kernel.client().wait_for_ready(timeout=5))
    assert kernel.asked == ["request-0", "handled"]


def test_a_lost_idle_status_is_asked_for_again():
    kernel = Kernel(lost=2)
    asyncio.run(kernel.client().wait_for_ready(timeout=5))
    assert kernel.asked == ["request-0", "request-1", "request-2", "handled"]


def test_a_dead_kernel_is_said_to_be_dead():
    with pytest.raises(RuntimeError, match="died"):
        asyncio.run(Kernel(dead=True).client().wait_for_ready(timeout=5))
