# What nix/package.nix asks of buildRustPackage, evaluated offline with
# nixpkgs' lib: every argument callPackage would pass is a stand-in named
# after its attribute, so the check phase's inputs come out by name.
#
#   nix-instantiate --eval --strict --json nix/rehearsal/package.nix --arg lib 'import LIB'
{ lib }:
let
  stand-in = name: {
    type = "derivation";
    pname = name;
    name = "${name}-0";
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  package = import ../package.nix;
  given = {
    inherit lib;
    rustPlatform.buildRustPackage = attrs: attrs;
  };
  attrs = package (lib.mapAttrs (name: _: given.${name} or (stand-in name)) (lib.functionArgs package));
in
{
  inherit (attrs) pname version cargoTestFlags;
  checkFlags = attrs.checkFlags or [ ];
  doCheck = attrs.doCheck or true;
  nativeCheckInputs = map (input: input.pname) (attrs.nativeCheckInputs or [ ]);
  mainProgram = attrs.meta.mainProgram;
}
