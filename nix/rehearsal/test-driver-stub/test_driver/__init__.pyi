# Part of our own type stub of the NixOS test driver's API (nixpkgs'
# nixos/lib/test-driver/src/test_driver/), for scripts/check-vm-scripts; see
# ../test_script_prelude.py. It declares only what the driver offers on both
# nixos-25.11 and master, so a script that passes here runs on either.
