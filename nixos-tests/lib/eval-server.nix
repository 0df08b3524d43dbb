# For scripts/check-nix only: the VM tests' server node (server.nix) in a form
# ../shared/nix/eval-module.nix evaluates offline. It adds what that file's
# stand-ins lack and an authorised key, as nodes.nix does in the VM tests.
{ lib, ... }:
{
  imports = [ ./server.nix ];
  options.networking.fqdnOrHostName = lib.mkOption {
    type = lib.types.str;
    default = "server";
  };
  config.services.procurator-ci.authorizedKeys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEZ0dGpSBl9dXI7maUROHjeBTZ8DM1IxSkVIR420PxFw check-nix"
  ];
}
