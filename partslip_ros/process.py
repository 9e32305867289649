"""Running nodes as processes: argument translation, executors, and a clean shutdown on SIGINT/SIGTERM.

Ctrl-C under ``ros2 launch`` sends SIGINT to the whole process group, and launch then sends its own
SIGINT (and SIGTERM after a timeout): a node gets two or three signals while it is shutting down.
``run_console`` therefore installs its own handlers (rclpy's are turned off): the first SIGINT or
SIGTERM asks the executor to stop; later ones only log that shutdown is under way. The node is then
shut down in order (its worker finishes or abandons the run in flight, nodes are destroyed, rclpy
shut down) and the process exits 0: no KeyboardInterrupt traceback, no "process has died".
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

EXIT_OK, EXIT_BAD_START = 0, 2


class NodeSpinner:
    """Spins groups of nodes, each group on its own SingleThreadedExecutor in a background thread."""

    def __init__(self, *groups: Sequence[Node]) -> None:
        self._executors = []
        self._threads = []
        for group in groups:
            executor = SingleThreadedExecutor(context=group[0].context)
            for node in group:
                executor.add_node(node)
            self._executors.append(executor)
            self._threads.append(threading.Thread(target=self._spin, args=(executor,), daemon=True))

    @staticmethod
    def _spin(executor) -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def start(self) -> "NodeSpinner":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Shut the executors down and join their threads (do this before rclpy.shutdown)."""
        for executor in self._executors:
            executor.shutdown(timeout_sec=5.0)
        for thread in self._threads:
            thread.join(timeout=10.0)


def ros_argv(argv: Sequence[str]) -> list[str]:
    """Turn a bare ``--params-file FILE`` into ``--ros-args --params-file FILE --`` placed first.

    Every params file (bare or inside --ros-args) must exist: a clear SystemExit instead of rcl's error."""
    args, files, in_ros, i = [], [], False, 0
    while i < len(argv):
        arg = argv[i]
        in_ros = True if arg == "--ros-args" else (False if arg == "--" else in_ros)
        if arg == "--params-file":
            if i + 1 >= len(argv):
                raise SystemExit("--params-file needs a file name")
            if not Path(argv[i + 1]).expanduser().is_file():
                raise SystemExit(f"--params-file {argv[i + 1]}: no such file")
            if not in_ros:
                files.append(argv[i + 1])
                i += 2
                continue
        args.append(arg)
        i += 1
    front = [item for path in files for item in ("--ros-args", "--params-file", path, "--")]
    return args[:1] + front + args[1:]  # before other ROS args, so a later -p name:=value still wins


class StopRequest:
    """Set by the first SIGINT/SIGTERM; later signals are only noted (shutdown is already under way)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals = 0
        self.logger = None  # the node's logger, once there is one

    def __call__(self, signum, _frame) -> None:
        self.signals += 1
        if self.event.is_set():
            if self.logger is not None:
                self.logger.info(f"{signal.Signals(signum).name} again: already shutting down")
            return
        self.event.set()

    def install(self) -> "StopRequest":
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self)
        return self


def spin_until_shutdown(node: Node, stop: Optional[threading.Event] = None, period_s: float = 0.1) -> None:
    """Spin ``node`` on a SingleThreadedExecutor until ``stop`` is set, rclpy shuts down or Ctrl-C."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while node.context.ok() and not (stop is not None and stop.is_set()):
            executor.spin_once(timeout_sec=period_s)  # returns at least every period_s: signals get handled
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=5.0)


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies (PR_SET_PDEATHSIG); False where that
    is not possible (not Linux, no libc). Safe in a ``preexec_fn`` (no allocation-heavy work, no output)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signum)) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def exit_with_parent() -> None:
    """Under launch (PARTSLIP_EXIT_WITH_PARENT=1, set by launch/segment.launch.py): ask Linux for a SIGTERM
    when the parent dies, so a launch that aborts never leaves this node running orphaned."""
    from partslip_ros.launch_args import EXIT_WITH_PARENT_ENV
    if os.environ.get(EXIT_WITH_PARENT_ENV, "") not in ("1", "true"):
        return
    if not set_parent_death_signal(signal.SIGTERM):
        print(f"{EXIT_WITH_PARENT_ENV}: cannot ask the kernel to stop this process with its parent (needs Linux "
              "prctl); it may outlive an aborted launch", file=sys.stderr)


def run_console(make_node: Callable[[], Node], argv: Optional[Sequence[str]] = None, name: str = "node") -> int:
    """Console-script body: init rclpy, build the node, spin until a signal, shut down cleanly; exit status.

    ``make_node`` errors (invalid parameters) print one line and return 2. A node with a ``service_node``
    attribute gets it spun on a second executor; one with ``shutdown()`` has it called before destruction."""
    try:
        return _run_console(make_node, argv, name)
    finally:
        # Exiting: a late SIGINT/SIGTERM (launch forwards the terminal's Ctrl-C, then its own) must not kill the
        # interpreter mid-finalization (exit -2). Python keeps SIG_IGN through finalization; SIGKILL still works.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _run_console(make_node: Callable[[], Node], argv: Optional[Sequence[str]], name: str) -> int:
    stop = StopRequest().install()
    exit_with_parent()
    try:
        args = ros_argv(list(sys.argv if argv is None else argv))
    except SystemExit as error:
        print(f"{name}: cannot start: {error}", file=sys.stderr)
        return EXIT_BAD_START
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as error:  # RCLError: unreadable params file, bad --ros-args
        print(f"{name}: cannot start: {str(error).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_START
    try:
        node = make_node()
    except Exception as error:  # invalid parameter values or types: say which and exit
        print(f"{name}: cannot start: {type(error).__name__}: {error}", file=sys.stderr)
        rclpy.try_shutdown(uninstall_handlers=False)  # keep ours: a late second SIGINT must not kill us
        return EXIT_BAD_START
    stop.logger = node.get_logger()
    extra = getattr(node, "service_node", None)
    spinner = NodeSpinner([extra]).start() if extra is not None else None
    try:
        spin_until_shutdown(node, stop.event)
    finally:
        if stop.event.is_set():
            node.get_logger().info("shutting down (signal received)")
        if spinner is not None:
            spinner.stop()
        if hasattr(node, "shutdown"):
            node.shutdown()
        else:
            node.destroy_node()
        stop.logger = None  # the node is gone; later signals are only counted
        rclpy.try_shutdown(uninstall_handlers=False)  # keep ours: a late second SIGINT must not kill us
    return EXIT_OK
