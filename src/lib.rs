//! procurator-ci: a Nix-native continuous integration daemon.
//!
//! `git push` to a managed bare repository, the post-receive hook asks the
//! daemon for a build, a worker runs `nix flake check` on the pushed commit
//! and the result, its log and live events are served over HTTP.

pub mod app;
pub mod build;
pub mod cache;
pub mod cli;
pub mod config;
pub mod events;
pub mod http;
pub mod ops;
pub mod redact;
pub mod repos;
pub mod server;
pub mod storage;
pub mod text;
