"""Caffe's logging for the command-line tools.

glog reads GLOG_minloglevel once, when pycaffe is first imported, so a tool that wants
Caffe's per-layer INFO/WARNING lines kept out of its own output calls ``quiet_glog()``
before it imports pycaffe (or an ``ltc`` module that does). Library modules never touch the
environment; a level the user set is kept (``GLOG_minloglevel=0 python tools/...`` shows it).
"""
import os


def quiet_glog(level="2"):
    """Set GLOG_minloglevel to ``level`` unless the caller's environment already sets it."""
    os.environ.setdefault("GLOG_minloglevel", str(level))
