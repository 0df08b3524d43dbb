//! procurator-ci: a Nix-native continuous integration daemon.
//!
//! `git push` to a managed bare repository, the post-receive hook asks the
//! daemon for a build, a worker runs `nix flake check` on the pushed commit
//! and the result, its log and live events are served over HTTP.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod checks;
pub mod cli;
pub mod config;
pub mod diagnosis;
pub mod events;
pub mod flake_inputs;
pub mod git_objects;
pub mod hook;
pub mod hosts;
pub mod listener;
pub mod log_window;
pub mod logs;
pub mod metrics;
pub mod nix;
pub mod nixlog;
pub mod notify;
pub mod preflight;
pub mod process;
pub mod progress;
pub mod pump;
pub mod queue;
pub mod repo_views;
pub mod repos;
pub mod server;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod text;
pub mod web;
pub mod worker;
