# What driver.nix of nixos-25.11 (the revision flake.lock pins) puts before
# each VM test's script for mypy, in the same shape as its
# nixos/lib/test-script-prepend.py: the driver's classes imported from their
# modules (here our stub, ./test_driver/), `Protocol` imported from
# typing_extensions and bound at the top level, and the driver's globals
# declared by annotation. scripts/check-vm-scripts then appends one
# `NAME: Machine;` per node, as driver.nix does, and the script. A script that
# binds `Protocol` again from `typing` collides with the import here under
# mypy before 1.18 ("Incompatible import of "Protocol""), which is why the
# check runs the mypy of that nixpkgs. Like the driver's, this prelude does
# not import `os`, which the driver gives only at run time.
from typing import Callable, ContextManager, List, Optional, Union, overload
from unittest import TestCase

from typing_extensions import Protocol

from test_driver.debug import DebugAbstract
from test_driver.driver import Driver
from test_driver.logger import AbstractLogger
from test_driver.machine import Machine
from test_driver.vlan import VLan


class RetryProtocol(Protocol):
    # fn gets True on its last try; the timeout is `timeout` on 25.11 and
    # `timeout_seconds` on master: pass it by position.
    def __call__(self, fn: Callable[[bool], object], timeout: int = 900, /) -> None: ...


class PollingConditionProtocol(Protocol):
    @overload
    def __call__(
        self, fun_: None = None, *, seconds_interval: float = 2.0, description: Optional[str] = None
    ) -> Callable[[Callable[[], object]], ContextManager[None]]: ...
    @overload
    def __call__(
        self, fun_: Callable[[], object], *, seconds_interval: float = 2.0, description: Optional[str] = None
    ) -> ContextManager[None]: ...
    def __call__(
        self, fun_: Optional[Callable[[], object]] = None, *, seconds_interval: float = 2.0,
        description: Optional[str] = None,
    ) -> Union[Callable[[Callable[[], object]], ContextManager[None]], ContextManager[None]]: ...


class CreateMachineProtocol(Protocol):
    # keep_vm_state (25.11) and keep_machine_state (master) are left out.
    def __call__(self, start_command: str, *, name: Optional[str] = None) -> Machine: ...


start_all: Callable[[], None]
# The name of the context manager's parameter differs between the branches.
subtest: Callable[[str], ContextManager[None]]
retry: RetryProtocol
test_script: Callable[[], None]
machines: List[Machine]
vlans: List[VLan]
driver: Driver
log: AbstractLogger
create_machine: CreateMachineProtocol
run_tests: Callable[[], None]
join_all: Callable[[], None]
serial_stdout_off: Callable[[], None]
serial_stdout_on: Callable[[], None]
polling_condition: PollingConditionProtocol
debug: DebugAbstract
t: TestCase
