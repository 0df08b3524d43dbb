{
  description = "procurator-ci: a Nix-native CI daemon that runs `nix flake check` for every git push";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      forAllSystems =
        f:
        lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: f nixpkgs.legacyPackages.${system});

      buildProcuratorCi =
        { lib, rustPlatform }:
        let
          cargoToml = lib.importTOML ./Cargo.toml;
        in
        rustPlatform.buildRustPackage {
          pname = cargoToml.package.name;
          inherit (cargoToml.package) version;

          # Only what cargo reads: editing the module, the VM tests or the
          # docs does not rebuild the daemon.
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./src
              ./static
              ./hooks
              (lib.fileset.maybeMissing ./tests)
              (lib.fileset.maybeMissing ./benches)
            ];
          };
          cargoLock.lockFile = ./Cargo.lock;

          # Only the library's unit tests run in the build sandbox. The
          # integration tests in tests/ need git, a nix daemon, journald, a
          # browser and real sockets; scripts/test and the VM tests run them.
          cargoTestFlags = [ "--lib" ];

          meta = {
            description = "Nix-native CI daemon: nix flake check for every git push";
            license = map lib.getLicenseFromSpdxId (lib.splitString " OR " cargoToml.package.license);
            mainProgram = "procurator-ci";
            platforms = lib.platforms.linux;
          };
        };

      # Every nixos-tests/*.nix is a VM test (pkgs.testers.runNixOSTest);
      # shared pieces live in nixos-tests/lib/, which is not scanned.
      vmTests =
        pkgs:
        let
          files = lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (
            builtins.readDir ./nixos-tests
          );
        in
        lib.mapAttrs' (
          file: _:
          lib.nameValuePair (lib.removeSuffix ".nix" file) (
            pkgs.testers.runNixOSTest {
              imports = [ (./nixos-tests + "/${file}") ];
              defaults.imports = [ self.nixosModules.default ];
            }
          )
        ) files;
    in
    {
      packages = forAllSystems (pkgs: rec {
        procurator-ci = pkgs.callPackage buildProcuratorCi { };
        default = procurator-ci;
      });

      overlays.default = final: _prev: {
        procurator-ci = final.callPackage buildProcuratorCi { };
      };

      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./nixos-module.nix ];
          services.procurator-ci.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.procurator-ci;
        };

      checks = forAllSystems (
        pkgs: { package = self.packages.${pkgs.stdenv.hostPlatform.system}.procurator-ci; } // vmTests pkgs
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            sqlite
            nix
            git
          ];
        };
      });

      # nixfmt is the RFC-style formatter (nixfmt-rfc-style is its old name).
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
