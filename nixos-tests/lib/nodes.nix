# Test module shared by the VM tests: `server` (lib/server.nix) authorises the
# key of `client`, which has git and a working copy of `demo` to push from.
{ pkgs, ... }:
let
  # A path, not a string: "${pkgs.path}" would copy nixpkgs into the store.
  keys = import (pkgs.path + "/nixos/tests/ssh-keys.nix") pkgs;
in
{
  nodes.server = {
    imports = [ ./server.nix ];
    services.procurator-ci.authorizedKeys = [ keys.snakeOilPublicKey ];
  };

  nodes.client = {
    environment.systemPackages = [ pkgs.curl ];
    programs.git = {
      enable = true;
      config = {
        init.defaultBranch = "main";
        user.name = "Test Pusher";
        user.email = "pusher@client";
      };
    };
    programs.ssh.extraConfig = ''
      Host server
        StrictHostKeyChecking accept-new
        BatchMode yes
    '';
    systemd.tmpfiles.rules = [
      "d /root/.ssh 0700 root root -"
      "C /root/.ssh/id_ecdsa 0600 root root - ${keys.snakeOilPrivateKey}"
    ];
  };
}
