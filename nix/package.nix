# The procurator-ci package, in nixpkgs' callPackage style: the flake builds
# it with its own nixpkgs (packages.<system>), with the caller's nixpkgs
# (overlays.default, nixosModules.default), and scripts/check-nix evaluates
# it offline to rehearse its check phase.
{
  lib,
  rustPlatform,
  git,
  procps,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  # Only what cargo reads: editing the module, the VM tests or the docs does
  # not rebuild the daemon.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../static
      ../hooks
      (lib.fileset.maybeMissing ../tests)
      (lib.fileset.maybeMissing ../benches)
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # Only the library's unit tests run in the build sandbox. The integration
  # tests in tests/ need a nix daemon, journald, a browser and real sockets;
  # scripts/test and the VM tests run them.
  cargoTestFlags = [ "--lib" ];
  # What those unit tests run besides the test binary: git (the object
  # readers and the branch-name grammar are checked against git itself) and
  # ps (a build's process group is checked from outside). scripts/check-nix
  # runs the tests with exactly these on PATH, beside stdenv's tools.
  nativeCheckInputs = [
    git
    procps
  ];

  meta = {
    description = "Nix-native CI daemon: nix flake check for every git push";
    license = map lib.getLicenseFromSpdxId (lib.splitString " OR " cargoToml.package.license);
    mainProgram = "procurator-ci";
    platforms = lib.platforms.linux;
  };
}
