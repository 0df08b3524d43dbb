# The `server` node of every VM test: procurator-ci with the repository `demo`.
# scripts/check-nix evaluates it offline as part of each VM test's nodes.
{ lib, ... }:
{
  services.procurator-ci = {
    enable = true;
    repos.demo.description = "pushed to by the VM tests";
    apiTokenFile = "/run/procurator-ci-test/api-token";
    openFirewall = true;
    # No public_url: bound to every address, the daemon names itself
    # http://server:3000 by the host name, which the unit's ProcSubset=pid
    # must not hide. The tests' links and Host headers rely on it.
    settings.bind_address = "0.0.0.0:3000";
  };

  # Test only: this puts the token's value into the Nix store. Real systems
  # provision the file outside the store (agenix, sops-nix, a deploy tool).
  systemd.tmpfiles.rules = [
    "d /run/procurator-ci-test 0700 root root -"
    "f /run/procurator-ci-test/api-token 0600 root root - test-token-0123456789abcdef"
  ];

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
    };
  };
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
  # The VMs have no network: no binary cache to ask (the daemon's pre-flight
  # would rightly report cache.nixos.org as `substituter_unreachable`).
  nix.settings.substituters = lib.mkForce [ ];
}
