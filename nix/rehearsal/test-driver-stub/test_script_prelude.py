# Prepended to each VM test's script for mypy, as nixpkgs' driver.nix prepends
# nixos/lib/test-script-prepend.py; scripts/check-vm-scripts appends one
# `NAME: VMTestMachine;` line per node, then the script. The names here are
# the driver globals of test_driver_symbols.txt; like nixpkgs', this prelude
# does not import `os`, which the driver gives only at run time.
from test_driver import (
    VMTestMachine,
    create_machine,
    driver,
    join_all,
    log,
    polling_condition,
    retry,
    run_tests,
    serial_stdout_off,
    serial_stdout_on,
    start_all,
    subtest,
    t,
    test_script,
    vlans,
)
