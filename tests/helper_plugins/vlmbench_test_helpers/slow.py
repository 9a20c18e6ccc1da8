"""``slow-echo``: answers the first word of the question after a delay, logging every call.

Each generate() call appends one line per request (the sample id) to the file named by the
``VLMBENCH_TEST_CALL_LOG`` environment variable, so tests can count exactly what was computed.
With ``hang_on=TEXT``, a DataLoader worker collating a question that contains TEXT never returns:
a stuck worker, as on a hung network file.
"""

import os
import time

from vlmbench import hookimpl
from vlmbench.errors import AssetMissingError
from vlmbench.plugin.args import Arg
from vlmbench.plugin.model import Model


class SlowEcho(Model):
    args = {
        "delay": Arg(float, 0.0, "seconds to sleep per batch"),
        "missing": Arg(bool, False, "pretend the weights are missing"),
        "token": Arg(str, None, "a secret (never written anywhere)", secret=True),
        "hang_on": Arg(str, None, "a worker collating a question with this text hangs"),
    }

    def collate(self, requests):
        text = self.arg_values["hang_on"]
        if text and any(text in r.question for r in requests):
            from torch.utils.data import get_worker_info

            if get_worker_info() is not None:  # only a worker: the main process must stay free
                time.sleep(3600)
        return None

    def load(self):
        if self.arg_values["missing"]:
            raise AssetMissingError("checkpoint test/missing", "pass --model-args pretrained=PATH")

    def generate(self, batch, generation):
        time.sleep(self.arg_values["delay"])
        log = os.environ.get("VLMBENCH_TEST_CALL_LOG")
        if log:
            with open(log, "a") as fh:
                fh.writelines(r.sample_id + "\n" for r in batch.requests)
                fh.flush()
                os.fsync(fh.fileno())
        return [r.question.split()[-1].strip("?") for r in batch.requests]


@hookimpl
def register_models(register):
    register("slow-echo", "vlmbench_test_helpers.slow:SlowEcho", summary="test model", parameters="0")
