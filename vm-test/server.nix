# The guest of scripts/vm-test as the NixOS module sees it: the VM tests'
# server node (../nixos-tests/lib/server.nix) with the test's push key, and
# crash-restart.nix's short watchdog (10 s rather than 5: the guest runs under
# software emulation). vm-test/render-unit evaluates the module with this
# configuration and turns what it renders into the guest's files.
#
# Besides: successful builds are pushed to a `file://` binary cache whose
# directory does not exist before the unit starts (the module's tmpfiles rule
# creates it for the service user), signed with a key scripts/vm-test makes in
# the guest.
{ pushKey }:
{
  imports = [ ../nixos-tests/lib/server.nix ];
  services.procurator-ci = {
    authorizedKeys = [ pushKey ];
    watchdogSec = 10;
    cache = {
      push = [ "file:///srv/nix-cache" ];
      secretKeyFile = "/etc/procurator-ci/cache.secret";
    };
  };
}
