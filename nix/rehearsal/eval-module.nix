# Evaluates nixos-module.nix offline, as NixOS would, with nixpkgs' lib and
# typed declarations of the NixOS options it sets (./nixos-options.nix): a
# misspelt option name or a value of the wrong type fails here, not in a
# user's nixos-rebuild. Packages are stand-ins (see `stand-in`); what a build
# would run is returned as data, so scripts/check-nix can rehearse it.
#
#   nix-instantiate --eval --strict --json nix/rehearsal/eval-module.nix \
#     --arg lib 'import LIB' [--arg config ./a-configuration.nix] [--argstr buildSystem aarch64-linux]
#
# With `--arg test ./nixos-tests/X.nix --argstr node NAME` the configuration
# is that node of the VM test, as runNixOSTest builds it (the test's
# `defaults`, which import the module as flake.nix has them do, and the node).
#
# Returns { service, users, groups, tmpfiles, firewall, nix, configFile,
# failedAssertions, warnings }; configFile.build is null when the build
# machine cannot run the daemon, else { script, settings } of its check.
{
  lib,
  module ? ../../nixos-module.nix,
  config ? { },
  system ? "x86_64-linux",
  buildSystem ? system,
  test ? null,
  node ? null,
  # The rustc of the stand-in nixpkgs (nix/default-module.nix checks it).
  rustcVersion ? "1.91.1",
  # Evaluate the flake's `nixosModules.default` (flake.nix's own output,
  # called with this lib) rather than `module`.
  flake ? false,
}:
let
  stand-in = name: {
    type = "derivation";
    inherit name system;
    pname = name;
    version = "0";
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
    meta.mainProgram = name;
    outputs = [ "out" ];
  };
  platform = system: {
    inherit system;
    canExecute = other: other.system == system;
  };
  tomlValue = lib.types.oneOf [
    lib.types.bool
    lib.types.int
    lib.types.float
    lib.types.str
    (lib.types.listOf tomlValue)
    (lib.types.attrsOf tomlValue)
  ];
  pkgs = {
    inherit lib system;
    # Holds nixos/tests/ssh-keys.nix, as nixpkgs' source tree does.
    path = ./test-nixpkgs;
    writeText = name: text: (stand-in name) // { inherit text; };
    stdenv = {
      hostPlatform = platform system;
      buildPlatform = platform buildSystem;
    };
    # As nixpkgs' formats.toml: a value type of what TOML holds (no null),
    # and a file made from the value.
    formats.toml = _: {
      type = lib.types.attrsOf tomlValue;
      generate = name: value: stand-in name // { settings = value; };
    };
    # The stand-in keeps what the build would run. Only runCommandLocal:
    # the configuration is built where it is evaluated, never substituted.
    runCommandLocal =
      name: env: script:
      stand-in name
      // {
        rehearsal = { inherit env script; };
      };
    rustc = {
      version = rustcVersion;
    };
    callPackage = file: _: stand-in "procurator-ci" // { callPackaged = toString file; };
  }
  // lib.genAttrs [
    "git"
    "nix"
    "openssh"
    "coreutils"
    "curl"
    "procurator-ci"
  ] stand-in;

  tested = lib.evalModules {
    modules = [
      ./test-options.nix
      { _module.args.pkgs = pkgs; }
      test
    ];
  };
  configurations =
    if test == null then
      [ config ]
    else
      [
        tested.config.defaults
        tested.config.nodes.${node}
        # The framework names each machine after its node.
        { networking.hostName = lib.mkDefault node; }
      ];

  flakeModule =
    ((import ../../flake.nix).outputs {
      self = { };
      nixpkgs = { inherit lib; };
    }).nixosModules.default;

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      (if flake then flakeModule else module)
    ]
    ++ configurations;
    specialArgs = {
      inherit pkgs;
      modulesPath = "/nonexistent";
    };
  };
  c = evaluated.config;
  configFile = if c.services.procurator-ci.enable then c.services.procurator-ci.configFile else null;
in
{
  service = c.systemd.services.procurator-ci or null;
  users = c.users.users;
  groups = c.users.groups;
  tmpfiles = c.systemd.tmpfiles.rules;
  firewall = c.networking.firewall.allowedTCPPorts;
  nix = {
    inherit (c.nix) distributedBuilds settings;
    buildMachines = map (machine: machine.hostName) c.nix.buildMachines;
  };
  configFile =
    if configFile == null then
      null
    else
      {
        path = configFile.outPath;
        build =
          if configFile ? rehearsal then
            {
              inherit (configFile.rehearsal) script;
              settings = configFile.rehearsal.env.unchecked.settings;
            }
          else
            null;
        settings = configFile.settings or null;
      };
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  package = c.services.procurator-ci.package.callPackaged or null;
  etc = lib.mapAttrs (_: file: file.source.outPath or null) c.environment.etc;
  # The options' documentation as the NixOS manual renders it: which have no
  # default to show.
  # (Ours only: nixpkgs' build machine entries have required fields.)
  withoutDefault = map (o: o.name) (
    lib.filter (
      o:
      o.visible
      && !o.internal
      && !(o ? default)
      && lib.any (file: lib.hasSuffix "nixos-module.nix" (toString file)) o.declarations
    ) (lib.optionAttrSetToDocList evaluated.options.services.procurator-ci)
  );
  inherit (c) warnings;
}
