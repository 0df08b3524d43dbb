# For scripts/check-vm-scripts: evaluates one VM test module (a file of
# nixos-tests/, as flake.nix hands it to pkgs.testers.runNixOSTest) offline,
# with nixpkgs' lib and lib.evalModules, and gives what nixpkgs' test driver
# type-checks and lints before it boots anything:
#
#   { name; nodes = [ node names ]; pythonNodes = [ their Python names ];
#     testScript = "the final script"; skipLint; skipTypeCheck; }
#
#   nix-instantiate --readonly-mode --eval --strict --json nix/rehearsal/test-scripts.nix \
#     --arg lib 'import ../shared/nix/nixpkgs-lib' --arg test ./nixos-tests/whole-loop.nix
#
# The test framework's options are typed in test-options.nix: a test setting
# any other option fails here. Nodes are deferred modules and are not
# evaluated here (eval-module.nix does that, for scripts/check-nix); their
# names are the attribute names, as system.name is the host name, which
# defaults to the attribute name.
{
  lib,
  test,
  system ? "x86_64-linux",
}:
let

  # A store path that is no store path: the name after a hash of what the
  # file would hold, so two different files get two different paths.
  fakeStorePath =
    name: content:
    "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" content)}-${name}";

  fakePackage = name: {
    type = "derivation";
    inherit name system;
    pname = name;
    version = "0";
    outPath = fakeStorePath name name;
    outputs = [ "out" ];
    meta.mainProgram = name;
  };

  pkgs = {
    inherit lib system;
    stdenv.hostPlatform.system = system;
    # Holds nixos/tests/ssh-keys.nix, as nixpkgs' source tree does.
    path = ./test-nixpkgs;
    writeText = name: text: fakeStorePath name text;
    coreutils = fakePackage "coreutils";
    curl = fakePackage "curl";
  };

  # Node names become Python names as nixpkgs' driver.nix makes them
  # (pythonizeName): a first character that is not a letter or `_`, and any
  # later one that is not a letter, digit or `_`, becomes `_`. The pattern
  # [A-z] is nixpkgs' own (it also lets [ \ ] ^ ` through).
  pythonizeName =
    name:
    let
      first = builtins.substring 0 1 name;
      rest = builtins.substring 1 (-1) name;
      keep = pattern: c: if builtins.match pattern c == null then "_" else c;
    in
    keep "[A-z_]" first + lib.stringAsChars (keep "[A-z0-9_]") rest;

  evaluated = lib.evalModules {
    modules = [
      ./test-options.nix
      { _module.args.pkgs = pkgs; }
      test
    ];
  };
  inherit (evaluated) config;

  nodeNames = lib.attrNames config.nodes;
  # With exactly one node, the driver also calls it `machine`.
  names = nodeNames ++ lib.optional (lib.length nodeNames == 1 && !lib.elem "machine" nodeNames) "machine";

  testScript =
    if lib.isFunction config.testScript then
      config.testScript {
        nodes = lib.genAttrs nodeNames (
          node: throw "check-vm-scripts: the testScript reads nodes.${node}, which is not evaluated offline"
        );
      }
    else
      config.testScript;
in
{
  inherit (config) name skipLint skipTypeCheck;
  nodes = names;
  pythonNodes = map pythonizeName names;
  testScript = builtins.unsafeDiscardStringContext testScript;
}
