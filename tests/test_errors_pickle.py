"""Every exception class of the package survives a pickle round trip.

Exceptions travel between processes: a DataLoader worker hands back requests whose image could not be
read (with the problem attached), and data-parallel ranks report failures. An exception that cannot
be unpickled turns one bad image into a crashed run, so each class is checked here — including any
added later: a class this test cannot construct fails until an example is added to ``EXAMPLES``.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import vlmbench
import vlmbench_plugins

# Constructor arguments for classes whose __init__ takes more than a message.
EXAMPLES = {
    "UnknownNameError": ("model", "blp", ["blip", "blip2"]),
    "AssetMissingError": ("BLIP weights", "pass --model-args pretrained=PATH"),
    "ImageProblem": ("missing_image", "images/a.jpg does not exist"),
    "SampleError": ("prompt_too_long", "the prompt has 9000 tokens; the model takes at most 512"),
    "RequestFailed": ("rejected", "HTTP 400: the image could not be decoded"),
}


def _modules():
    for package in (vlmbench, vlmbench_plugins):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if not info.name.endswith("__main__"):  # running it would start the CLI
                yield info.name


def _exception_classes():
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


CLASSES = _exception_classes()


def _example(cls):
    if cls.__name__ in EXAMPLES:
        return cls(*EXAMPLES[cls.__name__])
    if cls.__name__ == "CheckpointMismatchError":
        diff = importlib.import_module(cls.__module__).StateDictDiff(missing=[("a.weight", (4, 4))])
        return cls(diff, "ViLBERT", hint="use the 12-in-1 checkpoint")
    try:
        return cls("something went wrong")
    except TypeError as exc:
        pytest.fail(f"{cls.__qualname__} needs constructor arguments: add an example to EXAMPLES ({exc})")


def test_the_package_defines_exception_classes():
    names = {c.__name__ for c in CLASSES.values()}
    assert {"VlmbenchError", "ImageProblem", "AssetMissingError", "CheckpointMismatchError"} <= names


@pytest.mark.parametrize("qualname", sorted(CLASSES))
def test_exception_survives_pickle_round_trip(qualname):
    error = _example(CLASSES[qualname])
    error.extra_note = "kept"  # attributes set after construction travel too
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert copy.extra_note == "kept"
    for attr in ("reason", "message", "asset", "how", "kind", "name", "diff"):
        if hasattr(error, attr):
            assert getattr(copy, attr) == getattr(error, attr)
