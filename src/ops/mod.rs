//! Operating the daemon: logging, the systemd lifecycle, Prometheus
//! metrics, notifications of finished builds, commit statuses on forges
//! and backups.

pub mod backup;
pub mod forge;
pub mod instance;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod systemd;
pub mod telemetry;
