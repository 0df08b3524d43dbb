# Scaling out with a remote builder: the server's Nix daemon sends a pushed
# check over SSH (ssh-ng) to `builder`, and the build succeeds through the
# API. The proof that the builder built it does not rest on where the output
# is, since distributed builds copy outputs back to the requesting machine:
# - the check writes into its output what only the builder's sandbox holds
#   (/build-machine, an extra sandbox path of the builder alone), and fails
#   without it;
# - the server may not build at all (max-jobs = 0) nor substitute;
# - the output is valid in the builder's store with that content, and its
#   line is in the build's log; sshd on the builder logged the daemon's key.
{ lib, pkgs, ... }:
let
  keys = import (pkgs.path + "/nixos/tests/ssh-keys.nix") pkgs;
  inherit (pkgs.stdenv.hostPlatform) system;

  # Root's key on the server for the builder's `nixremote` user.
  builderKey = "/root/.ssh/nixremote_ed25519";
  identitySource = "/var/lib/build-machine-identity";
  identity = "procurator-ci-remote-builder";

  # `read` fails on a last line without a newline; the test of the value decides.
  script = ''machine=; read -r machine < /build-machine; test -n "$machine" && echo "built on $machine" && echo "$machine" > $out'';
  check = {
    name = "built-on-the-remote-builder";
    inherit system;
    builder = "/bin/sh";
    args = [
      "-c"
      script
    ];
  };
  # The pushed flake's check has the same attributes, so the same output
  # path. Without the string's context nothing is built on the host.
  checkOutput = builtins.unsafeDiscardStringContext (derivation check).outPath;
  str = lib.strings.escapeNixString;
  flake = pkgs.writeText "flake.nix" ''
    {
      outputs = { self }: {
        checks.${system}.${check.name} = derivation {
          name = ${str check.name};
          system = ${str check.system};
          builder = ${str check.builder};
          args = [ "-c" ${str script} ];
        };
      };
    }
  '';
in
{
  name = "procurator-ci-remote-builder";
  imports = [ ./lib/nodes.nix ];

  nodes.server = {
    services.procurator-ci.buildMachines = [
      {
        hostName = "builder";
        protocol = "ssh-ng";
        sshUser = "nixremote";
        sshKey = builderKey;
        inherit system;
        maxJobs = 1;
      }
    ];
    # The builder's host key, for root's SSH client, which the daemon runs.
    programs.ssh.knownHosts.builder.publicKey = keys.snakeOilPublicKey;
    nix.settings = {
      # Nothing is built here: a build the builder does not take fails.
      max-jobs = 0;
      substituters = lib.mkForce [ ];
    };
    systemd.tmpfiles.rules = [
      "d /root/.ssh 0700 root root -"
      "C ${builderKey} 0600 root root - ${keys.snakeOilEd25519PrivateKey}"
    ];
  };

  nodes.builder =
    { config, ... }:
    {
      services.openssh = {
        enable = true;
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
        };
        # A fixed host key (nixpkgs' ECDSA test key), declared on the server.
        hostKeys = [
          {
            type = "ecdsa";
            path = "/etc/ssh/ssh_host_ecdsa_key";
          }
        ];
      };
      environment.etc."ssh/ssh_host_ecdsa_key" = {
        source = keys.snakeOilPrivateKey;
        mode = "0600";
      };

      # The server's daemon logs in as `nixremote` and gets the Nix daemon
      # protocol and nothing else. Trusted, as building a derivation sent
      # over ssh-ng needs: root-equivalent on this machine.
      users.users.nixremote = {
        isSystemUser = true;
        group = "nixremote";
        # sshd runs the forced command with the user's shell.
        useDefaultShell = true;
        openssh.authorizedKeys.keys = [
          ''restrict,command="${config.nix.package}/bin/nix-daemon --stdio" ${keys.snakeOilEd25519PublicKey}''
        ];
      };
      users.groups.nixremote = { };

      nix.settings = {
        extra-trusted-users = [ "nixremote" ];
        substituters = lib.mkForce [ ];
        extra-sandbox-paths = [ "/build-machine=${identitySource}" ];
      };
      systemd.tmpfiles.rules = [ "f ${identitySource} 0644 root root - ${identity}" ];
    };

  testScript = builtins.readFile ./lib/helpers.py + ''
    OUTPUT = "${checkOutput}"
    IDENTITY = "${identity}"
    BUILDER_KEY = "${builderKey}"


    def valid(machine: Node, path: str) -> bool:
        return machine.execute(f"nix-store --check-validity {path}")[0] == 0


    start()
    builder.wait_for_unit("sshd.service")
    builder.wait_for_unit("nix-daemon.socket")

    with subtest("root on the server reaches the builder's Nix daemon as a trusted user, and nothing else"):
        info = json.loads(server.wait_until_succeeds(
            f"nix store info --json --store 'ssh-ng://nixremote@builder?ssh-key={BUILDER_KEY}'", timeout=120
        ))
        assert info.get("trusted") == 1, info
        output = server.succeed(f"timeout 60 ssh -i {BUILDER_KEY} nixremote@builder id </dev/null 2>&1 || true")
        assert "uid=" not in output, output

    with subtest("before the push, neither store has the check's output, and only the builder the identity"):
        assert not valid(server, OUTPUT) and not valid(builder, OUTPUT), OUTPUT
        server.fail("test -e ${identitySource}")
        builder.succeed("test -s ${identitySource}")

    with subtest("a pushed check only the builder can build ends in success"):
        commit_id = commit("${flake}", "a check only the builder can build")
        build_id = queued_build(push("main"), "main", commit_id)
        build = wait_for_status(build_id, FINAL)
        assert build["status"] == "success", build

    with subtest("the check was built on the builder"):
        assert valid(builder, OUTPUT), f"{OUTPUT} is not valid on the builder"
        assert builder.succeed(f"cat {OUTPUT}").strip() == IDENTITY
        # Copied back: the server has it, with content it could not produce.
        assert valid(server, OUTPUT), f"{OUTPUT} was not copied back to the server"
        assert server.succeed(f"cat {OUTPUT}").strip() == IDENTITY
        build_log = client.succeed(f"curl --fail --silent --show-error {API}/api/builds/{build_id}/logs")
        assert f"built on {IDENTITY}" in build_log, build_log[-2000:]
        builder.succeed("journalctl --unit=sshd.service | grep 'Accepted publickey for nixremote'")
  '';
}
