//! Operating the daemon: logging, the systemd lifecycle, Prometheus
//! metrics, notifications of finished builds and backups.

pub mod backup;
pub mod instance;
pub mod metrics;
pub mod notify;
pub mod systemd;
pub mod telemetry;
