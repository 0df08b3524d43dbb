//! Operating the daemon: logging, the systemd lifecycle, Prometheus
//! metrics and notifications of finished builds.

pub mod instance;
pub mod metrics;
pub mod notify;
pub mod systemd;
pub mod telemetry;
