# The flakes the VM tests push. They have no inputs and their checks are plain
# derivations run by the sandbox's /bin/sh, so they build offline in the VM.
pkgs:
let
  inherit (pkgs.stdenv.hostPlatform) system;
  failMarker = "this check fails on purpose";
  flakeWithCheck =
    name: script:
    pkgs.writeText "flake.nix" ''
      {
        outputs = { self }: {
          checks.${system}.${name} = derivation {
            name = "${name}";
            system = "${system}";
            builder = "/bin/sh";
            args = [ "-c" ${builtins.toJSON script} ];
          };
        };
      }
    '';
in
{
  inherit failMarker;
  passing = flakeWithCheck "passes" "echo passed > $out";
  failing = flakeWithCheck "fails" "echo '${failMarker}'; exit 1";
  # Needs /bin/sleep in the sandbox (nix.settings.extra-sandbox-paths).
  slow = flakeWithCheck "slow" "/bin/sleep 20 && echo slept > $out";
}
