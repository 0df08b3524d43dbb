# The flake's `nixosModules.default`: ../nixos-module.nix with `package`
# defaulting to this checkout built by the system's own nixpkgs (the `pkgs` of
# the configuration: one nixpkgs, its overlays apply, a cross-built system gets
# a cross-built daemon). A file, not an inline function, so that the module
# system knows it by its path: importing it twice (a flake and a module of
# your own both importing it) is harmless.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:
let
  cfg = config.services.procurator-ci;
  rustVersion = (lib.importTOML ../Cargo.toml).package.rust-version;
  # Whether the package is the one built here (set by no one but this file).
  builtHere = options.services.procurator-ci.package.highestPrio == (lib.mkDefault null).priority;
in
{
  imports = [ ../nixos-module.nix ];

  services.procurator-ci.package = lib.mkDefault (pkgs.callPackage ./package.nix { });

  # An older nixpkgs would otherwise fail late, in cargo, during the build.
  assertions = [
    {
      assertion = !cfg.enable || !builtHere || lib.versionAtLeast pkgs.rustc.version rustVersion;
      message = "services.procurator-ci: procurator-ci needs rustc ${rustVersion} or newer, and this nixpkgs has rustc ${pkgs.rustc.version}: use nixpkgs nixos-25.11 or newer, or set services.procurator-ci.package to a build of procurator-ci";
    }
  ];
}
