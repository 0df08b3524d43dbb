//! Running builds: the queue, the workers that run `nix flake check`,
//! the one way git and nix are started, reading nix's output, per-check
//! results, why a build failed, and the pre-flight of the host's nix.

pub mod builders;
pub mod checks;
pub mod diagnosis;
pub mod flake_inputs;
pub mod isolation;
pub mod nix;
pub mod nixlog;
pub mod outputs;
pub mod preflight;
pub mod process;
pub mod progress;
pub mod pump;
pub mod queue;
pub mod standing;
pub mod worker;
